//! The configured models and their prices, for metric labels and cost accounting.

/// The metric label for models that are not configured.
pub const OTHER: &str = "other";

/// The longest model name accepted.
const MAX_NAME_LEN: usize = 64;

const DEFAULT_NAMES: &[&str] = &["deepseek-chat", "deepseek-reasoner"];

/// DeepSeek's published USD list prices for its V3.2 models per 1M tokens:
/// cache hit 0.028, cache miss 0.28, output 0.42.
const DEFAULT_PRICES: &str = "deepseek-chat=0.028/0.28/0.42,deepseek-reasoner=0.028/0.28/0.42";

/// USD per million tokens for one model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// Input tokens served from the provider's context cache.
    pub input_cache_hit: f64,
    /// Input tokens not served from the cache.
    pub input_cache_miss: f64,
    /// Output tokens (reasoning tokens included).
    pub output: f64,
}

/// The configured models and their prices.
#[derive(Debug, Clone)]
pub struct Models {
    /// In configured order; never empty.
    models: Vec<(String, Option<Price>)>,
}

/// A bad `DEEPSEEK_MODELS` or `MODEL_PRICES` setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PricingError {
    /// `DEEPSEEK_MODELS` names no model.
    #[error("DEEPSEEK_MODELS: no models configured")]
    NoModels,
    /// A model name that is empty, too long, reserved or has bad characters.
    #[error("{var}: model name {name:?} {reason}")]
    BadName {
        /// The setting it came from.
        var: &'static str,
        /// The offending name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A model configured twice in `DEEPSEEK_MODELS`.
    #[error("DEEPSEEK_MODELS: model {0:?} is listed twice")]
    DuplicateModel(String),
    /// A `MODEL_PRICES` entry not of the form `model=hit/miss/output`.
    #[error("MODEL_PRICES: {0:?}: expected model=hit/miss/output")]
    Format(String),
    /// A price that is not a number.
    #[error("MODEL_PRICES: {entry:?}: {value:?} is not a number")]
    NotANumber {
        /// The whole entry.
        entry: String,
        /// The offending value.
        value: String,
    },
    /// A price that is negative, infinite or NaN.
    #[error("MODEL_PRICES: {entry:?}: {value:?} must be a finite number, not negative")]
    BadNumber {
        /// The whole entry.
        entry: String,
        /// The offending value.
        value: String,
    },
    /// A model priced twice in `MODEL_PRICES`.
    #[error("MODEL_PRICES: model {0:?} is priced twice")]
    DuplicatePrice(String),
    /// A priced model that `DEEPSEEK_MODELS` does not list.
    #[error("MODEL_PRICES: model {model:?} is not configured (DEEPSEEK_MODELS: {configured})")]
    NotConfigured {
        /// The priced model.
        model: String,
        /// The configured models, comma-separated.
        configured: String,
    },
}

fn check_name(var: &'static str, name: &str) -> Result<(), PricingError> {
    let reason = if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("is longer than 64 characters")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '-'))
    {
        Some("has characters outside [A-Za-z0-9._:/-]")
    } else if name == OTHER {
        Some("is reserved for unconfigured models")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(PricingError::BadName {
            var,
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn parse_number(entry: &str, value: &str) -> Result<f64, PricingError> {
    let number: f64 = value.parse().map_err(|_| PricingError::NotANumber {
        entry: entry.to_owned(),
        value: value.to_owned(),
    })?;
    if !number.is_finite() || number < 0.0 {
        return Err(PricingError::BadNumber {
            entry: entry.to_owned(),
            value: value.to_owned(),
        });
    }
    // Normalise -0.
    Ok(number.abs())
}

fn parse_entry(entry: &str) -> Result<(&str, Price), PricingError> {
    let format = || PricingError::Format(entry.to_owned());
    let (model, numbers) = entry.split_once('=').ok_or_else(format)?;
    let mut parts = numbers.split('/').map(str::trim);
    let (Some(hit), Some(miss), Some(output), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format());
    };
    let model = model.trim();
    check_name("MODEL_PRICES", model)?;
    Ok((
        model,
        Price {
            input_cache_hit: parse_number(entry, hit)?,
            input_cache_miss: parse_number(entry, miss)?,
            output: parse_number(entry, output)?,
        },
    ))
}

impl Models {
    /// Parses `prices` (`MODEL_PRICES`), a comma-separated list of
    /// `model=hit/miss/output` (USD per 1M tokens), e.g.
    /// `"deepseek-chat=0.028/0.28/0.42,deepseek-reasoner=0.028/0.28/0.42"`,
    /// for `models`, the configured model names (`DEEPSEEK_MODELS`, e.g.
    /// `["deepseek-chat", "deepseek-reasoner"]`).
    ///
    /// Names and entries are trimmed and empty entries skipped. Every priced
    /// model must be configured; a configured model without a price has no
    /// cost. Model names must be 1–64 characters from `[A-Za-z0-9._:/-]`,
    /// and not `other` (the label for unconfigured models).
    pub fn new(models: &[String], prices: &str) -> Result<Self, PricingError> {
        let mut configured: Vec<(String, Option<Price>)> = Vec::with_capacity(models.len());
        for name in models {
            let name = name.trim();
            check_name("DEEPSEEK_MODELS", name)?;
            if configured.iter().any(|(known, _)| known == name) {
                return Err(PricingError::DuplicateModel(name.to_owned()));
            }
            configured.push((name.to_owned(), None));
        }
        if configured.is_empty() {
            return Err(PricingError::NoModels);
        }
        for entry in prices.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (model, price) = parse_entry(entry)?;
            let Some((_, slot)) = configured.iter_mut().find(|(known, _)| known == model) else {
                return Err(PricingError::NotConfigured {
                    model: model.to_owned(),
                    configured: models
                        .iter()
                        .map(|m| m.trim())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            if slot.is_some() {
                return Err(PricingError::DuplicatePrice(model.to_owned()));
            }
            *slot = Some(price);
        }
        Ok(Self { models: configured })
    }

    /// deepseek-chat and deepseek-reasoner, both priced 0.028 / 0.28 / 0.42
    /// USD per 1M tokens (cache hit / cache miss / output).
    pub fn default_models() -> Self {
        let names: Vec<String> = DEFAULT_NAMES.iter().map(|&n| n.to_owned()).collect();
        Self::new(&names, DEFAULT_PRICES)
            .unwrap_or_else(|e| unreachable!("the default prices are valid: {e}"))
    }

    /// The default `MODEL_PRICES`.
    pub fn default_prices() -> &'static str {
        DEFAULT_PRICES
    }

    /// The default `DEEPSEEK_MODELS`.
    pub fn default_names() -> &'static [&'static str] {
        DEFAULT_NAMES
    }

    /// The label for metrics: the model if configured, else "other".
    pub fn label<'a>(&'a self, model: &'a str) -> &'a str {
        if self.is_configured(model) {
            model
        } else {
            OTHER
        }
    }

    /// Whether `model` is configured.
    pub fn is_configured(&self, model: &str) -> bool {
        self.models.iter().any(|(name, _)| name == model)
    }

    /// The price of `model`, if it is configured and priced.
    pub fn price(&self, model: &str) -> Option<Price> {
        self.models
            .iter()
            .find(|(name, _)| name == model)
            .and_then(|(_, price)| *price)
    }

    /// Cost in USD from usage; `None` when the model has no price.
    ///
    /// Reasoning tokens are part of `output`, so they are not added again.
    pub fn cost(
        &self,
        model: &str,
        input_cache_hit: u64,
        input_cache_miss: u64,
        output: u64,
    ) -> Option<f64> {
        let price = self.price(model)?;
        // Token counts are far below 2^53, so the conversions are exact.
        let micro = input_cache_hit as f64 * price.input_cache_hit
            + input_cache_miss as f64 * price.input_cache_miss
            + output as f64 * price.output;
        Some(micro / 1_000_000.0)
    }

    /// The configured model names, in configured order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.models.iter().map(|(name, _)| name.as_str())
    }

    /// The first configured model.
    pub fn default_model(&self) -> &str {
        self.models
            .first()
            .map_or(DEFAULT_NAMES[0], |(name, _)| name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|&s| s.to_owned()).collect()
    }

    fn err(models: &[&str], prices: &str) -> String {
        Models::new(&names(models), prices)
            .expect_err("should fail")
            .to_string()
    }

    const CHAT: &[&str] = &["deepseek-chat", "deepseek-reasoner"];

    #[test]
    fn parses_prices() {
        let models = Models::new(
            &names(CHAT),
            " deepseek-chat = 0.028/0.28/0.42 , deepseek-reasoner=1/2/3,",
        )
        .expect("valid");
        assert_eq!(
            models.price("deepseek-chat"),
            Some(Price {
                input_cache_hit: 0.028,
                input_cache_miss: 0.28,
                output: 0.42
            })
        );
        assert_eq!(
            models.price("deepseek-reasoner"),
            Some(Price {
                input_cache_hit: 1.0,
                input_cache_miss: 2.0,
                output: 3.0
            })
        );
        assert_eq!(models.names().collect::<Vec<_>>(), CHAT);
        assert_eq!(models.default_model(), "deepseek-chat");
    }

    #[test]
    fn defaults() {
        let models = Models::default_models();
        assert_eq!(models.names().collect::<Vec<_>>(), Models::default_names());
        assert_eq!(models.default_model(), "deepseek-chat");
        let expected = Price {
            input_cache_hit: 0.028,
            input_cache_miss: 0.28,
            output: 0.42,
        };
        assert_eq!(models.price("deepseek-chat"), Some(expected));
        assert_eq!(models.price("deepseek-reasoner"), Some(expected));
        let reparsed = Models::new(&names(Models::default_names()), Models::default_prices())
            .expect("defaults parse");
        assert_eq!(reparsed.price("deepseek-reasoner"), Some(expected));
    }

    #[test]
    fn cost_is_hand_computed() {
        let models = Models::default_models();
        let cost = models
            .cost("deepseek-chat", 1_000_000, 2_000_000, 500_000)
            .expect("priced");
        // 0.028 + 0.56 + 0.21
        assert!((cost - 0.798).abs() < 1e-12, "{cost}");
        assert_eq!(models.cost("deepseek-chat", 0, 0, 0), Some(0.0));
        let small = models
            .cost("deepseek-reasoner", 0, 1000, 1000)
            .expect("priced");
        // 1000 * 0.28 / 1e6 + 1000 * 0.42 / 1e6 = 0.00028 + 0.00042
        assert!((small - 0.0007).abs() < 1e-15, "{small}");
    }

    #[test]
    fn unpriced_and_unknown_models_have_no_cost() {
        let models = Models::new(&names(CHAT), "deepseek-chat=1/2/3").expect("valid");
        assert!(models.is_configured("deepseek-reasoner"));
        assert_eq!(models.price("deepseek-reasoner"), None);
        assert_eq!(models.cost("deepseek-reasoner", 1, 1, 1), None);
        assert_eq!(models.cost("gpt-4", 1, 1, 1), None);
        let models = Models::new(&names(CHAT), "").expect("no prices at all");
        assert_eq!(models.cost("deepseek-chat", 1, 1, 1), None);
    }

    #[test]
    fn labels() {
        let models = Models::default_models();
        assert_eq!(models.label("deepseek-chat"), "deepseek-chat");
        assert_eq!(models.label("deepseek-reasoner"), "deepseek-reasoner");
        assert_eq!(models.label("gpt-4"), OTHER);
        assert_eq!(models.label(""), OTHER);
        assert!(!models.is_configured("DeepSeek-Chat"));
    }

    #[test]
    fn format_errors() {
        assert_eq!(
            err(&["x"], "x=1/2"),
            r#"MODEL_PRICES: "x=1/2": expected model=hit/miss/output"#
        );
        assert_eq!(
            err(&["x"], "x=1/2/3/4"),
            r#"MODEL_PRICES: "x=1/2/3/4": expected model=hit/miss/output"#
        );
        assert_eq!(
            err(&["x"], "x"),
            r#"MODEL_PRICES: "x": expected model=hit/miss/output"#
        );
    }

    #[test]
    fn number_errors() {
        assert_eq!(
            err(&["x"], "x=a/2/3"),
            r#"MODEL_PRICES: "x=a/2/3": "a" is not a number"#
        );
        assert_eq!(
            err(&["x"], "x=1//3"),
            r#"MODEL_PRICES: "x=1//3": "" is not a number"#
        );
        assert_eq!(
            err(&["x"], "x=1/-2/3"),
            r#"MODEL_PRICES: "x=1/-2/3": "-2" must be a finite number, not negative"#
        );
        assert_eq!(
            err(&["x"], "x=1/2/inf"),
            r#"MODEL_PRICES: "x=1/2/inf": "inf" must be a finite number, not negative"#
        );
        assert_eq!(
            err(&["x"], "x=NaN/2/3"),
            r#"MODEL_PRICES: "x=NaN/2/3": "NaN" must be a finite number, not negative"#
        );
    }

    #[test]
    fn duplicate_errors() {
        assert_eq!(
            err(&["x"], "x=1/2/3,x=1/2/3"),
            r#"MODEL_PRICES: model "x" is priced twice"#
        );
        assert_eq!(
            err(&["x", "x"], ""),
            r#"DEEPSEEK_MODELS: model "x" is listed twice"#
        );
    }

    #[test]
    fn priced_models_must_be_configured() {
        assert_eq!(
            err(CHAT, "gpt-4=1/2/3"),
            r#"MODEL_PRICES: model "gpt-4" is not configured (DEEPSEEK_MODELS: deepseek-chat, deepseek-reasoner)"#
        );
        assert_eq!(err(&[], ""), "DEEPSEEK_MODELS: no models configured");
    }

    #[test]
    fn name_errors() {
        assert_eq!(
            err(&["x"], "=1/2/3"),
            r#"MODEL_PRICES: model name "" is empty"#
        );
        assert_eq!(
            err(&[" "], ""),
            r#"DEEPSEEK_MODELS: model name "" is empty"#
        );
        let long = "m".repeat(65);
        assert_eq!(
            err(&[&long], ""),
            format!(r#"DEEPSEEK_MODELS: model name "{long}" is longer than 64 characters"#)
        );
        Models::new(&names(&[&"m".repeat(64)]), "").expect("64 is fine");
        assert_eq!(
            err(&["x"], "bad model=1/2/3"),
            r#"MODEL_PRICES: model name "bad model" has characters outside [A-Za-z0-9._:/-]"#
        );
        assert_eq!(
            err(&["caf\u{e9}"], ""),
            "DEEPSEEK_MODELS: model name \"caf\u{e9}\" has characters outside [A-Za-z0-9._:/-]"
        );
        assert_eq!(
            err(&["other"], ""),
            r#"DEEPSEEK_MODELS: model name "other" is reserved for unconfigured models"#
        );
        Models::new(
            &names(&["org/Model-v1.5:latest_x"]),
            "org/Model-v1.5:latest_x=0/0/0",
        )
        .expect("all allowed characters");
    }
}
