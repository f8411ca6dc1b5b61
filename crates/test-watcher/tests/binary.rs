//! The `test-watcher` binary as an operator runs it.

use automation_testkit::binary::refuses;

const BIN: &str = env!("CARGO_BIN_EXE_test-watcher");

#[test]
fn a_bad_configuration_prints_one_line_and_exits_64() {
    for (var, value, mentions) in [
        ("WATCH_ROOT", "/nonexistent/tree", "/nonexistent/tree"),
        ("DEBOUNCE_MS", "soon", "soon"),
        ("ON_BUSY", "panic", "panic"),
        ("HEARTBEAT_INTERVAL", "0s", "0s"),
    ] {
        refuses(BIN, &[(var, value)], mentions);
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
        refuses(BIN, vars, mentions);
    }
}
