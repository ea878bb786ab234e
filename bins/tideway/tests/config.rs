//! A gateway given settings that cannot work refuses to start and says which.

use std::process::Command;

/// Runs `tideway` with `args` and `env`, expecting it to refuse to start; returns what it
/// printed.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let port = tideway_test_util::free_port();
    let output = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--api-keys", "k"])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run tideway");
    assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn settings_that_cannot_work_stop_the_gateway_with_their_names() {
    let said = refused(&["--heartbeat", "0s", "--header-read-timeout", "0s"], &[]);
    assert!(said.contains("refusing to start"), "{said}");
    assert!(
        said.contains("--heartbeat (TIDEWAY_HEARTBEAT) is 0ms"),
        "{said}"
    );
    assert!(
        said.contains("--header-read-timeout (TIDEWAY_HEADER_READ_TIMEOUT) is 0ms"),
        "{said}"
    );
    // From the environment alike.
    let said = refused(&[], &[("TIDEWAY_TOKEN_SECRET", "too-short")]);
    assert!(
        said.contains("--token-secret (TIDEWAY_TOKEN_SECRET) is 9 bytes"),
        "{said}"
    );
    assert!(
        !said.contains("too-short"),
        "a secret is never printed: {said}"
    );
    let said = refused(&["--max-topics", "0"], &[]);
    assert!(
        said.contains("--max-topics (TIDEWAY_MAX_TOPICS) is 0"),
        "{said}"
    );
}
