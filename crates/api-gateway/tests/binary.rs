//! The `api-gateway` binary as an operator runs it.

use automation_testkit::binary::refuses;

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
        let stderr = refuses(BIN, &vars, mentions);
        assert!(
            !stderr.contains("sk-x"),
            "the key is in the error: {stderr}"
        );
    }
}
