//! The clients as their users get them: each built into its package (an npm tarball, a
//! wheel, a Go module served by a module proxy, a crate from `cargo package`) and
//! installed into a fresh directory, where the examples then run. The e2e run uses these installs, so a packaging mistake
//! (a file left out, an export missing, a dependency undeclared) fails it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::{go_env, python_bin, run, status};

/// Where the installed examples live.
pub(crate) struct Installed {
    /// The TypeScript examples' directory, with `tideway-client` from its tarball.
    pub typescript: PathBuf,
    /// The Python of a fresh virtual environment with the wheel installed.
    pub python: PathBuf,
    /// The Go examples' binaries, built against the module fetched from a proxy.
    pub go_bin: PathBuf,
    /// The Rust examples' binaries, built against the packaged crates.
    pub rust_bin: PathBuf,
}

pub(crate) fn install(root: &Path) -> Result<Installed, String> {
    let work = root.join("target").join("e2e");
    let packages = work.join("packages");
    fresh_dir(&packages)?;
    Ok(Installed {
        typescript: typescript(root, &work, &packages)?,
        python: python(root, &work, &packages)?,
        go_bin: go(root, &work)?,
        rust_bin: rust(root, &work)?,
    })
}

fn fresh_dir(dir: &Path) -> Result<(), String> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("remove {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}

/// `npm pack` of clients/typescript, installed into a new project beside the examples'
/// compiled JavaScript.
fn typescript(root: &Path, work: &Path, packages: &Path) -> Result<PathBuf, String> {
    let client = root.join("clients").join("typescript");
    crate::typescript_build(&client)?;
    let dest = packages.to_string_lossy();
    run(
        &client,
        "npm",
        &["pack", "--silent", "--pack-destination", &dest],
    )?;
    let tarball = packages.join("tideway-client-0.1.0.tgz");
    let examples = root.join("examples").join("typescript");
    crate::typescript_build(&examples)?;
    let app = work.join("typescript-app");
    fresh_dir(&app)?;
    write(
        &app.join("package.json"),
        r#"{ "name": "tideway-e2e-app", "private": true, "type": "module" }"#,
    )?;
    let tarball = tarball.to_string_lossy();
    run(
        &app,
        "npm",
        &[
            "install",
            "--silent",
            "--no-audit",
            "--no-fund",
            "--prefer-offline",
            &tarball,
        ],
    )?;
    for name in ["publisher.js", "subscriber.js"] {
        let from = examples.join("dist").join(name);
        std::fs::copy(&from, app.join(name))
            .map_err(|e| format!("copy {}: {e}", from.display()))?;
    }
    Ok(app)
}

/// The wheel of clients/python, installed into a new virtual environment.
fn python(root: &Path, work: &Path, packages: &Path) -> Result<PathBuf, String> {
    let venv_python = python_bin(root);
    let dest = packages.to_string_lossy();
    let project = root.join("clients").join("python");
    let project = project.to_string_lossy();
    run(
        root,
        &venv_python.to_string_lossy(),
        &[
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            &dest,
            &project,
        ],
    )?;
    let wheel = packages.join("tideway_client-0.1.0-py3-none-any.whl");
    let venv = work.join("python-venv");
    fresh_dir(&venv)?;
    run(root, "python3", &["-m", "venv", &venv.to_string_lossy()])?;
    let python = venv.join("bin").join("python");
    run(
        root,
        &python.to_string_lossy(),
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &wheel.to_string_lossy(),
        ],
    )?;
    Ok(python)
}

/// The module github.com/tideway-gateway/tideway/clients/go zipped as a module proxy
/// serves it (a `file://` GOPROXY), then the examples built in a new module that
/// requires it — the way `go get` would fetch it, with no `replace`.
fn go(root: &Path, work: &Path) -> Result<PathBuf, String> {
    const MODULE: &str = "github.com/tideway-gateway/tideway/clients/go";
    const VERSION: &str = "v0.1.0";
    let proxy = work.join("goproxy");
    let cache = work.join("gomodcache");
    // The module cache's files are read-only; `go clean` removes them.
    if cache.exists() {
        let mut clean = Command::new("go");
        clean
            .args(["clean", "-modcache"])
            .env("GOMODCACHE", &cache)
            .env("GOTOOLCHAIN", "local");
        status(&mut clean)?;
    }
    fresh_dir(&proxy)?;
    let versions = proxy.join(MODULE).join("@v");
    std::fs::create_dir_all(&versions)
        .map_err(|e| format!("create {}: {e}", versions.display()))?;
    let source = root.join("clients").join("go");
    write(&versions.join("list"), &format!("{VERSION}\n"))?;
    write(
        &versions.join(format!("{VERSION}.info")),
        &format!(r#"{{"Version":"{VERSION}","Time":"2026-01-01T00:00:00Z"}}"#),
    )?;
    let go_mod = std::fs::read_to_string(source.join("go.mod"))
        .map_err(|e| format!("read clients/go/go.mod: {e}"))?;
    write(&versions.join(format!("{VERSION}.mod")), &go_mod)?;
    // A module zip: every file under the module root, prefixed MODULE@VERSION/.
    let zip_script = r#"
import os, sys, zipfile
src, out, prefix = sys.argv[1:4]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for dirpath, dirs, files in os.walk(src):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            z.write(path, prefix + "/" + os.path.relpath(path, src))
"#;
    let zip = versions.join(format!("{VERSION}.zip"));
    run(
        root,
        &python_bin(root).to_string_lossy(),
        &[
            "-c",
            zip_script,
            &source.to_string_lossy(),
            &zip.to_string_lossy(),
            &format!("{MODULE}@{VERSION}"),
        ],
    )?;
    let app = work.join("go-app");
    fresh_dir(&app)?;
    copy_dir(
        &root.join("examples").join("go").join("cmd"),
        &app.join("cmd"),
    )?;
    write(
        &app.join("go.mod"),
        &format!("module tideway.example/e2e\n\ngo 1.19\n\nrequire {MODULE} {VERSION}\n"),
    )?;
    let bin = app.join("bin");
    let mut build = Command::new("go");
    go_env(&mut build)
        .current_dir(&app)
        .args(["build", "-o", &format!("{}/", bin.display()), "./cmd/..."])
        .env("GOPROXY", format!("file://{}", proxy.display()))
        .env("GOMODCACHE", &cache)
        .env("GONOSUMDB", MODULE)
        .env("GOFLAGS", "-mod=mod")
        .env("GOSUMDB", "off");
    status(&mut build)?;
    Ok(bin)
}

/// `cargo package` of tideway-client (with tideway-protocol, which it needs), unpacked
/// and built as a dependency of a new project outside the workspace, with the examples'
/// sources as its binaries. Its own target directory (kept between runs) keeps its
/// binaries apart from the workspace's examples of the same names.
fn rust(root: &Path, work: &Path) -> Result<PathBuf, String> {
    let crates = work.join("rust-crates");
    fresh_dir(&crates)?;
    let package_dir = work.join("rust-package");
    let mut package = Command::new("cargo");
    package
        .current_dir(root)
        .args(["package", "--quiet", "--no-verify", "--allow-dirty"])
        .args(["-p", "tideway-protocol", "-p", "tideway-client"])
        .env("CARGO_TARGET_DIR", &package_dir);
    status(&mut package)?;
    for name in ["tideway-protocol-0.1.0", "tideway-client-0.1.0"] {
        let file = package_dir.join("package").join(format!("{name}.crate"));
        run(
            root,
            "tar",
            &[
                "-xzf",
                &file.to_string_lossy(),
                "-C",
                &crates.to_string_lossy(),
            ],
        )?;
    }
    let app = work.join("rust-app");
    fresh_dir(&app)?;
    let manifest = format!(
        r#"[package]
name = "tideway-e2e-app"
version = "0.0.0"
edition = "2024"
publish = false

# Its own workspace: nothing inherited from the repository's.
[workspace]

[dependencies]
tideway-client = {{ path = "{crates}/tideway-client-0.1.0" }}
serde_json = "1"
tokio = {{ version = "1", features = ["rt", "macros"] }}

# The packaged crate names tideway-protocol by version, as crates.io would serve it.
[patch.crates-io]
tideway-protocol = {{ path = "{crates}/tideway-protocol-0.1.0" }}
"#,
        crates = crates.display()
    );
    write(&app.join("Cargo.toml"), &manifest)?;
    // The workspace's lock file, so the same versions are picked (and reused).
    std::fs::copy(root.join("Cargo.lock"), app.join("Cargo.lock"))
        .map_err(|e| format!("copy Cargo.lock: {e}"))?;
    copy_dir(&root.join("examples/rust/src/bin"), &app.join("src/bin"))?;
    let target = work.join("rust-target");
    let mut build = Command::new("cargo");
    build
        .current_dir(&app)
        .args(["build", "--quiet", "--bins"])
        .env("CARGO_TARGET_DIR", &target);
    status(&mut build)?;
    Ok(target.join("debug"))
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("create {}: {e}", to.display()))?;
    let entries = std::fs::read_dir(from).map_err(|e| format!("read {}: {e}", from.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .map_err(|e| format!("copy {}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}
