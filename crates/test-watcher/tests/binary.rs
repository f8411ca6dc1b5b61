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

#[test]
fn a_bad_gateway_configuration_exits_64_too() {
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("EXPLAIN_TIMEOUT", "soon")], "soon"),
        (&[("EXPLAIN_TIMEOUT", "0s")], "above zero"),
        (&[("EXPLAIN_MAX_OUTPUT", "lots")], "lots"),
        (&[("GATEWAY_ENDPOINT", "ftp://gateway:50054")], "ftp://"),
        (
            &[
                ("GATEWAY_ENDPOINT", "http://127.0.0.1:1"),
                ("GATEWAY_TOKEN_FILE", "/nonexistent/gateway-token"),
            ],
            "/nonexistent/gateway-token",
        ),
    ];
    for (vars, mentions) in cases {
        let out = Command::new(BIN)
            .envs(vars.iter().copied())
            .env("GRPC_LISTEN", "127.0.0.1:0")
            .env("HTTP_LISTEN", "127.0.0.1:0")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{vars:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{vars:?}: {stderr}");
        assert!(stderr.contains(mentions), "{vars:?}: {stderr}");
    }
}
