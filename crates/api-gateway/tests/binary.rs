//! The `api-gateway` binary as an operator runs it.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_api-gateway");

#[test]
fn a_bad_configuration_prints_one_line_and_exits_64() {
    for (vars, mentions) in [
        (
            vec![("MODEL_PRICES", "deepseek-chat=1/2")],
            "deepseek-chat=1/2",
        ),
        (vec![("DEEPSEEK_MODELS", "bad model")], "bad model"),
        (vec![("DEEPSEEK_BASE_URL", "not a url")], "not a url"),
        (vec![("FIRST_TOKEN_TIMEOUT", "0s")], "0s"),
        (vec![("CLIENT_RATE_LIMIT", "-3")], "-3"),
        (
            vec![
                ("DEEPSEEK_API_KEY", "sk-x"),
                ("DEEPSEEK_API_KEY_FILE", "/k"),
            ],
            "not both",
        ),
    ] {
        let out = Command::new(BIN)
            .envs(vars.iter().copied())
            .env("GRPC_LISTEN", "127.0.0.1:0")
            .env("HTTP_LISTEN", "127.0.0.1:0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{vars:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{vars:?}: {stderr}");
        assert!(stderr.contains(mentions), "{vars:?}: {stderr}");
        assert!(
            !stderr.contains("sk-x"),
            "the key is in the error: {stderr}"
        );
    }
}
