//! The `test-watcher` binary as an operator runs it.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_test-watcher");

#[test]
fn a_bad_configuration_prints_one_line_and_exits_64() {
    for (var, value, mentions) in [
        ("WATCH_ROOT", "/nonexistent/tree", "/nonexistent/tree"),
        ("DEBOUNCE_MS", "soon", "soon"),
        ("ON_BUSY", "panic", "panic"),
        ("HEARTBEAT_INTERVAL", "0s", "0s"),
    ] {
        let out = Command::new(BIN)
            .env(var, value)
            .env("GRPC_LISTEN", "127.0.0.1:0")
            .env("HTTP_LISTEN", "127.0.0.1:0")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{var}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{var}: {stderr}");
        assert!(stderr.contains(mentions), "{var}: {stderr}");
    }
}
