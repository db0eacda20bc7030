//! `tollgate`: see the library for the commands.

fn main() -> std::process::ExitCode {
    tollgate::main()
}
