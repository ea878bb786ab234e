//! `cargo xtask <task>`: the project's tasks, in Rust so they run wherever cargo does.
//!
//! - `test`: installs missing system and Python packages, then `cargo fmt --check`,
//!   clippy with warnings denied, the tidy checks (layering, file docs), every test
//!   (including the proptest-driven fuzz targets at a larger case count and the multi-node
//!   tests against a real Redis), the deployment check (`deploy_check.py`), and the admin
//!   UI's checks: types, Vitest, that the embedded build is fresh and reproducible, and
//!   its test in a real headless Chromium.
//! - `bench`: runs the divan micro-benchmarks and the gateway scenarios (Tideway, and
//!   Nchan beside it), and writes JSON, Markdown and SVG plots to `benchmark-results/`.
//!   `cargo xtask bench --no-micro fanout drop` runs only the scenarios named so.
//! - `e2e`: runs every example's publisher against every example's subscriber through
//!   real gateways (one node, and three nodes with Redis); results in `test-results/`.
//! - `chaos`: faults injected into real gateways and a real Redis (restarts, pauses, a
//!   killed pub/sub connection, `kill -9`, racing resumes, skewed clocks); counts events
//!   lost without a signal, duplicated and reordered; results in `test-results/`.

mod bench;
mod chaos;
mod e2e;
mod faults;
mod nchan;
mod packages;
mod procs;
mod report;
mod svg;
mod tidy;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("tidy") => tidy::check(&root()),
        Some("bench") => bench::run(&root(), &args[1..]),
        Some("e2e") => {
            // Standalone on a fresh machine too: the packages it builds need these.
            let root = root();
            ensure_packages(SYSTEM_PACKAGES)
                .and_then(|()| check_node())
                .and_then(|()| ensure_python_packages(&root, PYTHON_PACKAGES))
                .and_then(|()| e2e::run(&root))
        }
        Some("chaos") => chaos::run(&root(), &args[1..]),
        _ => Err(
            "usage: cargo xtask <test|tidy|bench|e2e|chaos>\n  test   format, lint, tidy, every test, the e2e and chaos runs\n  tidy   only the layering and docs checks\n  bench  benchmarks, results in benchmark-results/ ([--no-micro] [SCENARIO-PREFIX...])\n  e2e    the examples against real gateways, results in test-results/\n  chaos  faults injected into real gateways and Redis, results in test-results/ ([SCENARIO-PREFIX...])"
                .to_owned(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of this crate's folder).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// System packages the tests need: (command that must exist, Debian package giving it).
const SYSTEM_PACKAGES: &[(&str, &str)] = &[
    ("redis-server", "redis-server"),
    ("redis-cli", "redis-tools"),
    ("openssl", "openssl"),
    ("curl", "curl"),
    ("docker-compose", "docker-compose"),
    ("chromium", "chromium"),
    ("node", "nodejs"),
    ("npm", "npm"),
    ("go", "golang-go"),
    ("faketime", "faketime"),
];

/// Python packages the deployment check needs: (module to import, PyPI package).
const PYTHON_PACKAGES: &[(&str, &str)] = &[
    ("helm_python", "helm-python-sdk"),
    ("kubernetes_validate", "kubernetes-validate"),
    ("yaml", "PyYAML"),
    ("httpx", "httpx"),
    ("pytest", "pytest"),
    ("ruff", "ruff"),
    ("mypy", "mypy"),
    ("wheel", "wheel"),
];

fn test() -> Result<(), String> {
    let root = root();
    ensure_packages(SYSTEM_PACKAGES)?;
    check_node()?;
    ensure_python_packages(&root, PYTHON_PACKAGES)?;
    let venv_python = python_bin(&root);
    let venv_python = venv_python.to_string_lossy();
    run(&root, "cargo", &["fmt", "--all", "--check"])?;
    run(
        &root,
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    tidy::check(&root)?;
    // Before the workspace's tests: the store conformance suite starts this Worker.
    worker(&root)?;
    // The fuzz targets are proptest properties over arbitrary bytes; here they run many
    // more cases than a plain `cargo test`, for a bounded time.
    let mut command = Command::new("cargo");
    command
        .current_dir(&root)
        .args(["test", "--workspace", "--quiet"])
        .env(
            "PROPTEST_CASES",
            std::env::var("PROPTEST_CASES").unwrap_or_else(|_| "2000".into()),
        );
    status(&mut command)?;
    run(&root, &venv_python, &["xtask/deploy_check.py"])?;
    admin(&root)?;
    python(&root)?;
    golang(&root)?;
    let typescript = root.join("clients").join("typescript");
    typescript_build(&typescript)?;
    run(&typescript, "npx", &["vitest", "run"])?;
    e2e::run(&root)?;
    chaos::run(&root, &[])?;
    eprintln!("xtask: all checks passed");
    Ok(())
}

/// Installs missing packages with apt-get when running as root; otherwise says what to run.
fn ensure_packages(packages: &[(&str, &str)]) -> Result<(), String> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(command, _)| !on_path(command))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    if !on_path("apt-get") || !is_root {
        return Err(format!(
            "missing system packages: {list}\n  install them with: sudo apt-get install -y {list}"
        ));
    }
    eprintln!("xtask: installing {list}");
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    let quiet_update = Command::new("apt-get")
        .args(["update", "-qq"])
        .envs(env)
        .status();
    if !quiet_update.is_ok_and(|s| s.success()) {
        eprintln!("xtask: apt-get update failed; trying the install anyway");
    }
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .envs(env);
    status(&mut install).map_err(|e| format!("{e}\n  install by hand: apt-get install -y {list}"))
}

/// The admin UI: types, unit tests, that the embedded build matches the sources and
/// rebuilds identically from package-lock.json, and the browser tests against a real
/// gateway (the UI, and ten EventSources of one page over HTTP/2).
fn admin(root: &Path) -> Result<(), String> {
    let admin = root.join("admin");
    if !admin.join("node_modules").is_dir() {
        run(&admin, "npm", &["ci", "--no-audit", "--no-fund"])?;
    }
    run(&admin, "npm", &["run", "--silent", "typecheck"])?;
    run(&admin, "npm", &["test", "--silent"])?;
    run(&admin, "npm", &["run", "--silent", "check-fresh"])?;
    let rebuild = root.join("target").join("admin-rebuild");
    let out = rebuild.to_string_lossy().into_owned();
    run(
        &admin,
        "npx",
        &[
            "vite",
            "build",
            "--logLevel",
            "warn",
            "--outDir",
            &out,
            "--emptyOutDir",
        ],
    )?;
    same_files(&admin.join("dist"), &rebuild)?;
    run(root, "cargo", &["build", "--quiet", "-p", "tideway"])?;
    // The TypeScript client's browser test loads its built package.
    typescript_build(&root.join("clients").join("typescript"))?;
    // The admin UI, ten EventSources of one page over HTTPS (HTTP/2), and the TypeScript
    // client in the browser.
    for test in ["tests/e2e.mjs", "tests/h2.mjs", "tests/client.mjs"] {
        let mut e2e = Command::new("node");
        e2e.current_dir(&admin).arg(test).env(
            "TIDEWAY_BIN",
            root.join("target").join("debug").join("tideway"),
        );
        status(&mut e2e)?;
    }
    Ok(())
}

/// The Durable-Object Worker: its packages from its lock file (workerd comes with
/// them), its types checked strictly, its bundle built for the tests that start it.
pub(crate) fn worker(root: &Path) -> Result<(), String> {
    let worker = root.join("worker");
    if !worker.join("node_modules").is_dir() {
        run(&worker, "npm", &["ci", "--no-audit", "--no-fund"])?;
    }
    run(&worker, "npm", &["run", "--silent", "check"])?;
    run(&worker, "npm", &["run", "--silent", "build"])
}

/// `go` with the standard library only: no module proxy, no toolchain download.
pub(crate) fn go_env(command: &mut Command) -> &mut Command {
    command
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
}

/// Runs `go` in `dir` (clients/go or examples/go) with the standard library only.
pub(crate) fn go(dir: &Path, args: &[&str]) -> Result<(), String> {
    let mut command = Command::new("go");
    go_env(&mut command).current_dir(dir).args(args);
    status(&mut command)
}

/// Installs a TypeScript project's packages from its lock file when missing, and builds
/// it (type-checking it strictly) into its `dist/`.
pub(crate) fn typescript_build(dir: &Path) -> Result<(), String> {
    if !dir.join("node_modules").is_dir() {
        run(dir, "npm", &["ci", "--no-audit", "--no-fund"])?;
    }
    run(dir, "npx", &["tsc", "-p", "."])
}

/// The Go client and examples: gofmt'ed, vetted, tested.
fn golang(root: &Path) -> Result<(), String> {
    for dir in ["clients/go", "examples/go"] {
        let dir = root.join(dir);
        let output = Command::new("gofmt")
            .args(["-l", "."])
            .current_dir(&dir)
            .output()
            .map_err(|e| format!("gofmt: {e}"))?;
        let unformatted = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if !unformatted.is_empty() {
            return Err(format!("gofmt would change: {unformatted}"));
        }
        go(&dir, &["vet", "./..."])?;
    }
    go(&root.join("clients/go"), &["test", "./..."])
}

/// The Python client and examples: formatted, linted, typed strictly, unit-tested.
fn python(root: &Path) -> Result<(), String> {
    let python = python_bin(root);
    let python = python.to_string_lossy();
    let client = root.join("clients").join("python");
    let examples = root.join("examples").join("python");
    for dir in [&client, &examples] {
        run(dir, &python, &["-m", "ruff", "format", "--check", "."])?;
        run(dir, &python, &["-m", "ruff", "check", "."])?;
    }
    run(
        &client,
        &python,
        &["-m", "mypy", "--strict", "tideway_client", "tests"],
    )?;
    let mut mypy = Command::new(&*python);
    mypy.current_dir(&examples)
        .args(["-m", "mypy", "--strict", "publisher.py", "subscriber.py"])
        .env("PYTHONPATH", &client);
    status(&mut mypy)?;
    run(&client, &python, &["-m", "pytest", "-q", "tests"])
}

/// Fails unless `built` holds exactly the files of `committed` (but its source hash),
/// byte for byte.
fn same_files(committed: &Path, built: &Path) -> Result<(), String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, base, out);
            } else if path.file_name().is_some_and(|n| n != ".source-hash") {
                let name = path
                    .strip_prefix(base)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                out.push((name, std::fs::read(&path).unwrap_or_default()));
            }
        }
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    walk(committed, committed, &mut a);
    walk(built, built, &mut b);
    a.sort();
    b.sort();
    if a == b {
        eprintln!("xtask: admin/dist rebuilds identically from the sources and package-lock.json");
        return Ok(());
    }
    let names =
        |files: &[(String, Vec<u8>)]| files.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    Err(format!(
        "admin/dist differs from a fresh build: committed {:?}, built {:?}; run `npm ci && npm run build` in admin/ and commit admin/dist",
        names(&a),
        names(&b)
    ))
}

/// The Python the tests run: the virtual environment `target/venv`, which xtask owns, so
/// nothing is installed into the system's Python (refused under PEP 668 anyway).
pub(crate) fn python_bin(root: &Path) -> PathBuf {
    root.join("target").join("venv").join("bin").join("python")
}

/// Makes `target/venv` if it is not there, then installs the missing Python packages
/// into it with its pip.
fn ensure_python_packages(root: &Path, packages: &[(&str, &str)]) -> Result<(), String> {
    let python = python_bin(root);
    if !python.is_file() {
        let venv = root.join("target").join("venv");
        eprintln!("xtask: making the Python environment {}", venv.display());
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success());
        if !made {
            // Debian and Ubuntu ship venv's pip bootstrap separately.
            // (A command name no PATH holds: the package is installed unconditionally.)
            ensure_packages(&[("python3-venv (ensurepip)", "python3-venv")])?;
            let mut again = Command::new("python3");
            again.args(["-m", "venv"]).arg(&venv);
            status(&mut again).map_err(|e| {
                format!(
                    "{e}\n  python3 -m venv needs the venv module: apt-get install python3-venv"
                )
            })?;
        }
    }
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(module, _)| {
            !Command::new(&python)
                .args(["-c", &format!("import {module}")])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    eprintln!("xtask: installing Python packages {list} into target/venv");
    let mut install = Command::new(&python);
    install
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(&missing);
    status(&mut install).map_err(|e| {
        format!(
            "{e}\n  install by hand: {} -m pip install {list}",
            python.display()
        )
    })
}

/// Node 20 or later (the examples and the admin UI use its fetch streaming and test
/// runner); an older one is named with what to do.
fn check_node() -> Result<(), String> {
    let version = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("could not run node: {e}"))?;
    let text = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let major: u32 = text
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major >= 20 {
        return Ok(());
    }
    Err(format!(
        "Node {text} is too old: the tests need Node 20 or later. Install it from NodeSource (https://github.com/nodesource/distributions) or with nvm, then run again"
    ))
}

fn on_path(command: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(command).is_file()))
}

pub(crate) fn run(root: &Path, program: &str, args: &[&str]) -> Result<(), String> {
    status(Command::new(program).current_dir(root).args(args))
}

pub(crate) fn status(command: &mut Command) -> Result<(), String> {
    eprintln!("xtask: {command:?}");
    let status = command
        .status()
        .map_err(|e| format!("could not run {:?}: {e}", command.get_program()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{:?} failed: {status}", command.get_program()))
    }
}
