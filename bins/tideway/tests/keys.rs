//! The keys file of a running `tideway`: loaded at start, reloaded when it changes.

use std::process::{Command, Stdio};

use tideway_test_util::{Client, wait_until};

#[tokio::test]
async fn the_keys_file_is_reloaded_when_it_changes() {
    let dir = std::env::temp_dir().join(format!("tideway-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keys.json");
    let write = |json: &str| std::fs::write(&file, json).unwrap();
    write(r#"{"keys": [{"name": "ops", "key": "first-secret", "scopes": ["admin"]}]}"#);

    let port = tideway_test_util::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(["--listen", &addr, "--keys-file", file.to_str().unwrap()])
        .env_remove("SSE_PUBLISHER_API_KEYS")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("start tideway");
    tideway_test_util::wait_listening(&addr);
    let client = Client {
        addr: addr.parse().unwrap(),
    };
    let status = |key: &'static str| async move {
        client
            .get(
                "/v1/admin/nodes",
                &[&format!("authorization: Bearer {key}")],
            )
            .await
            .status
    };
    assert_eq!(status("first-secret").await, 200);

    write(r#"{"keys": [{"name": "ops", "key": "second-secret", "scopes": ["admin"]}]}"#);
    wait_until(
        "the new key to be in force and the old one gone",
        || async {
            match (status("first-secret").await, status("second-secret").await) {
                (401, 200) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
