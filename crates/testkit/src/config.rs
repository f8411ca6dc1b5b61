//! A service's command line converted into its configuration, the way its
//! binary does, for the conversion's unit tests.

/// Parses `args` (the program name left out, the environment read as the
/// binary would) into `C`, then converts it into `T`; clap's error or the
/// conversion's, as text.
pub fn converted<C, T>(args: &[&str]) -> Result<T, String>
where
    C: clap::Parser,
    T: TryFrom<C, Error = String>,
{
    let cli = C::try_parse_from(std::iter::once("service").chain(args.iter().copied()))
        .map_err(|e| e.to_string())?;
    T::try_from(cli)
}

/// Asserts that `args` convert into exactly `expected`, every field
/// compared (through `Debug`).
pub fn assert_converts<C, T>(args: &[&str], expected: &T)
where
    C: clap::Parser,
    T: TryFrom<C, Error = String> + std::fmt::Debug,
{
    let converted = converted::<C, T>(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert_eq!(
        format!("{converted:?}"),
        format!("{expected:?}"),
        "{args:?}"
    );
}

/// The reporter configuration the reporter flags' defaults give `service`'s
/// instance `instance`.
pub fn default_reporter(
    service: &str,
    instance: &str,
) -> automation_telemetry::reporter::ReporterConfig {
    let version = env!("CARGO_PKG_VERSION");
    automation_telemetry::reporter::ReporterConfig::new(
        "http://127.0.0.1:50051",
        service,
        instance,
        version,
    )
}
