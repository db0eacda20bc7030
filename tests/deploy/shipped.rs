//! `deploy/` is what it claims to be: every configuration it ships passes `tollgate check` and
//! carries the repository's plans; the Kubernetes ConfigMaps are the files they are made from;
//! the alert rules and the scrape configuration pass `promtool`; every manifest and the compose
//! file pass their schemas; the systemd unit passes `systemd-analyze verify`; and every stop
//! timeout outlasts the gateway's drain; and a running gateway reloads a configuration
//! published the way the kubelet updates a mounted ConfigMap. (The topology itself runs in
//! deploy_topology.rs.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use crate::harness;
use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use harness::Gateway;

use support::{deploy_dir, find_tool, replace_once, repo_root, require_tool, run_ok};

/// The Kubernetes release the manifests are validated against.
const KUBERNETES_VERSION: &str = "1.31.0";

/// Each configuration deploy/ ships, and where the gateway finds it at run time: the pricing
/// directory is resolved from there.
const CONFIGS: [(&str, &str); 4] = [
    ("container/gateway.toml", "config/gateway.toml"),
    ("compose/config/gateway.toml", "config/gateway.toml"),
    ("kubernetes/gateway.toml", "config/gateway.toml"),
    ("systemd/gateway.toml", "gateway.toml"),
];

/// Lays `config` out as it is installed (`installed`, relative to a stand-in for /etc/tollgate,
/// with the repository's pricing/ beside it) and returns the path to check.
fn install(config: &str, installed: &str, root: &Path) -> PathBuf {
    let target = root.join(installed);
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(deploy_dir().join(config), &target).unwrap();
    std::os::unix::fs::symlink(repo_root().join("pricing"), root.join("pricing")).unwrap();
    target
}

#[test]
fn every_configuration_deploy_ships_passes_check() {
    for (config, installed) in CONFIGS {
        let root = tempfile::tempdir().unwrap();
        let path = install(config, installed, root.path());
        let output = Command::new(env!("CARGO_BIN_EXE_tollgate-e2e"))
            .args(["check", "--config", &path.display().to_string()])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "deploy/{config}: tollgate check failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// From the `# Plans.` comment to the end: the plans, and the commented `[[keys]]` example.
fn plans(text: &str) -> &str {
    let start = text.find("# Plans.").expect("a `# Plans.` section");
    &text[start..]
}

#[test]
fn every_configuration_deploy_ships_offers_the_repository_plans() {
    let shipped = std::fs::read_to_string(repo_root().join("gateway.toml")).unwrap();
    for (config, _) in CONFIGS {
        let text = std::fs::read_to_string(deploy_dir().join(config)).unwrap();
        assert!(
            plans(&text) == plans(&shipped),
            "deploy/{config}: its plans differ from gateway.toml's; copy them from there"
        );
    }
}

/// `data:` entries of a ConfigMap: each file's name and text as a YAML block scalar.
fn config_map(name: &str, files: &[(String, String)]) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels:\n    \
         app.kubernetes.io/name: tollgate\ndata:\n"
    );
    for (file, text) in files {
        out.push_str(&format!("  {file}: |\n"));
        for line in text.lines() {
            if line.is_empty() {
                out.push('\n');
            } else {
                out.push_str(&format!("    {line}\n"));
            }
        }
    }
    out
}

/// deploy/kubernetes/config.yaml as it must be: the ConfigMaps of gateway.toml and pricing/.
fn expected_config_maps() -> String {
    let gateway = std::fs::read_to_string(deploy_dir().join("kubernetes/gateway.toml")).unwrap();
    let mut pricing: Vec<(String, String)> = std::fs::read_dir(repo_root().join("pricing"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    pricing.sort();
    format!(
        "# Generated from deploy/kubernetes/gateway.toml and pricing/ by\n\
         #   TOLLGATE_BLESS=1 cargo test -p tollgate --test deploy\n\
         # Edit those files, not this one; then `kubectl apply -f deploy/kubernetes/config.yaml`:\n\
         # every pod reloads both within a minute or so (the kubelet's sync period).\n\
         {}---\n{}",
        config_map("tollgate-config", &[("gateway.toml".to_owned(), gateway)]),
        config_map("tollgate-pricing", &pricing)
    )
}

#[test]
fn the_kubernetes_config_maps_hold_the_files_they_are_made_from() {
    let path = deploy_dir().join("kubernetes/config.yaml");
    let expected = expected_config_maps();
    if std::env::var_os("TOLLGATE_BLESS").is_some() {
        std::fs::write(&path, &expected).unwrap();
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "deploy/kubernetes/config.yaml is out of date: regenerate it with \
         TOLLGATE_BLESS=1 cargo test -p tollgate --test deploy"
    );
}

#[test]
fn the_alert_rules_pass_promtool() {
    let Some(promtool) = require_tool("promtool") else {
        return;
    };
    let rules = deploy_dir().join("monitoring/alerts.yml");
    run_ok(&promtool, &["check", "rules", &rules.display().to_string()]);
}

#[test]
fn the_prometheus_configuration_passes_promtool() {
    let Some(promtool) = require_tool("promtool") else {
        return;
    };
    // As compose mounts it: the rules beside the configuration, where its glob finds them.
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(deploy_dir().join("compose/prometheus.yml")).unwrap();
    let rules_dir = dir.path().join("rules");
    std::fs::create_dir(&rules_dir).unwrap();
    std::fs::copy(
        deploy_dir().join("monitoring/alerts.yml"),
        rules_dir.join("tollgate.yml"),
    )
    .unwrap();
    let glob = rules_dir.join("*.yml").display().to_string();
    let config = replace_once(&shipped, "/etc/prometheus/rules/*.yml", &glob);
    let path = dir.path().join("prometheus.yml");
    std::fs::write(&path, config).unwrap();
    let output = run_ok(&promtool, &["check", "config", &path.display().to_string()]);
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("SUCCESS: 9 rules found"), "{said}");
}

/// Every YAML file under `dir` (not following into other folders unless `recursive`).
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .flat_map(|path| {
            if path.is_dir() {
                yaml_files(&path)
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                vec![path]
            } else {
                Vec::new()
            }
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_kubernetes_manifest_passes_its_schema() {
    let Some(validate) = require_tool("kubernetes-validate") else {
        return;
    };
    let manifests = yaml_files(&deploy_dir().join("kubernetes"));
    let kinds: Vec<String> = manifests
        .iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            text.lines()
                .filter_map(|line| line.strip_prefix("kind: ").map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect();
    for kind in [
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    let mut args = vec![
        "--strict".to_owned(),
        "--kubernetes-version".to_owned(),
        KUBERNETES_VERSION.to_owned(),
    ];
    args.extend(manifests.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run_ok(&validate, &args);
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(!said.contains("WARN"), "{said}");
}

#[test]
fn the_compose_file_passes_the_compose_specification() {
    let Some(check) = require_tool("check-jsonschema") else {
        return;
    };
    let compose = deploy_dir().join("compose/compose.yaml");
    let compose = compose.display().to_string();
    run_ok(
        &check,
        &["--builtin-schema", "vendor.compose-spec", &compose],
    );
    // `docker compose config` also resolves it, where the docker CLI has the compose plugin.
    if let Some(docker) = find_tool("docker") {
        let plugin = Command::new(&docker).args(["compose", "version"]).output();
        if plugin.is_ok_and(|o| o.status.success()) {
            let dir = tempfile::tempdir().unwrap();
            let env = dir.path().join(".env");
            std::fs::copy(deploy_dir().join("compose/.env.example"), &env).unwrap();
            let env = env.display().to_string();
            run_ok(
                &docker,
                &[
                    "compose",
                    "--env-file",
                    &env,
                    "-f",
                    &compose,
                    "config",
                    "-q",
                ],
            );
        }
    }
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = require_tool("systemd-analyze") else {
        return;
    };
    // `verify` checks that ExecStart's program exists: point it at the binary just built.
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(deploy_dir().join("systemd/tollgate.service")).unwrap();
    let unit = unit.replace(
        "/usr/local/bin/tollgate",
        env!("CARGO_BIN_EXE_tollgate-e2e"),
    );
    let path = dir.path().join("tollgate.service");
    std::fs::write(&path, unit).unwrap();
    let output = run_ok(&analyze, &["verify", &path.display().to_string()]);
    // It exits 0 on an unknown key or a bad value, only saying so.
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.trim().is_empty(), "systemd-analyze verify: {said}");
}

/// The first number after `key` in `text`.
fn number_after(text: &str, key: &str) -> u64 {
    let start = text.find(key).unwrap_or_else(|| panic!("no {key}")) + key.len();
    let digits: String = text[start..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

#[test]
fn every_stop_timeout_outlasts_the_gateway_drain() {
    let read = |file: &str| std::fs::read_to_string(deploy_dir().join(file)).unwrap();
    let drain = |config: &str| number_after(&read(config), "graceful_shutdown_secs =");
    let deployment = read("kubernetes/deployment.yaml");
    let pre_stop = number_after(&deployment, "command: [\"sleep\",");
    let grace = number_after(&deployment, "terminationGracePeriodSeconds:");
    assert!(
        grace > pre_stop + drain("kubernetes/gateway.toml"),
        "terminationGracePeriodSeconds {grace} must exceed the preStop sleep ({pre_stop}) plus \
         graceful_shutdown_secs"
    );
    let compose = number_after(&read("compose/compose.yaml"), "stop_grace_period:");
    assert!(compose > drain("compose/config/gateway.toml"));
    let systemd = number_after(&read("systemd/tollgate.service"), "TimeoutStopSec=");
    assert!(systemd > drain("systemd/gateway.toml"));
}

/// Publishes `text` as `dir/gateway.toml` the way the kubelet updates a mounted ConfigMap: a new
/// timestamped directory, its `..data` link renamed over the old one, `gateway.toml` a link
/// through `..data`. The file's times are the same in every version.
fn publish_like_the_kubelet(dir: &Path, version: &str, text: &str) {
    let data = dir.join(format!("..{version}"));
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("gateway.toml"), text).unwrap();
    let kept = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    std::fs::File::options()
        .write(true)
        .open(data.join("gateway.toml"))
        .unwrap()
        .set_modified(kept)
        .unwrap();
    std::os::unix::fs::symlink(format!("..{version}"), dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    let link = dir.join("gateway.toml");
    if !std::fs::symlink_metadata(&link).unwrap().is_symlink() {
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("..data/gateway.toml", &link).unwrap();
    }
}

/// The line of the gateway's `/metrics` that starts with `prefix`, if there is one.
fn metric_line(gateway: &Gateway, prefix: &str) -> Option<String> {
    let metrics = harness::request(gateway.admin_port, "GET", "/metrics", &[], b"").text();
    metrics
        .lines()
        .find(|line| line.starts_with(prefix))
        .map(str::to_owned)
}

/// The version label of `tollgate_config_info`.
fn config_version(gateway: &Gateway) -> String {
    let line = metric_line(gateway, "tollgate_config_info{").expect("tollgate_config_info");
    let start = line.find("version=\"").unwrap() + "version=\"".len();
    line[start..].split('"').next().unwrap().to_owned()
}

/// Polls every 100 ms until `check` holds; fails with `what` after 15 s.
fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_config_map_update_is_reloaded_by_a_running_gateway() {
    let plan = "[plans.small]\nname = \"Small\"\ntier = \"pro\"\ntotal_calls = 10\n";
    let gateway = Gateway::start("", plan, &[]);
    let dir = gateway.dir.path().to_owned();
    let text = std::fs::read_to_string(gateway.config_path()).unwrap();
    // Moving the file behind the links is a change of its own: let it be reloaded first.
    publish_like_the_kubelet(&dir, "2026_12_06_01", &text);
    let running = &gateway;
    let reloaded = |n: u32| {
        let line = format!("tollgate_config_reloads_total{{result=\"ok\"}} {n}");
        move || metric_line(running, &line).is_some()
    };
    eventually("the move behind the links was not reloaded", reloaded(1));
    let before = config_version(&gateway);

    // The same length and the same times: only the link swap tells the versions apart.
    let edited = replace_once(&text, "total_calls = 10", "total_calls = 20");
    publish_like_the_kubelet(&dir, "2026_12_06_02", &edited);
    eventually("the ConfigMap update was not reloaded", reloaded(2));
    assert_ne!(config_version(&gateway), before);
}
