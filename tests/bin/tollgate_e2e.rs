//! The gateway under test: the `tollgate` program itself, built in this package so the tests can
//! name its binary (`CARGO_BIN_EXE_tollgate-e2e`, which Cargo sets only for a package's own).

fn main() -> std::process::ExitCode {
    tollgate::main()
}
