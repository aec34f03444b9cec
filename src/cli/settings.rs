//! Settings: every command-line flag can also come from a `LAKESCORE_*`
//! environment variable or a `--config` TOML file. Precedence: flag, then
//! environment, then file, then the built-in default; `--print-config` shows
//! the effective value of each setting and where it came from.
//!
//! One source of truth: the clap command. Each flag's environment variable is
//! derived from its long name (`--metrics-file` reads `LAKESCORE_METRICS_FILE`),
//! and the file's keys are the long names too (`metrics-file = "..."`). File
//! values become command-line tokens appended for the flags that neither the
//! command line nor the environment set, and the whole line is parsed again,
//! so a file value is checked exactly like the same flag typed by hand.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

use lakescore::util::Suggestion;

/// The flag naming the config file (its own variable is `LAKESCORE_CONFIG`).
pub const CONFIG_FLAG: &str = "config";
/// Flags that only make sense typed: they get no variable and no file key
/// (besides `--help` and `--version`, found by their action).
const COMMAND_LINE_ONLY: [&str; 2] = ["print-config", CONFIG_FLAG];
/// The commands a config file configures. Other commands (`profile`, `model
/// package`, ...) take only its global settings (log format, verbosity): a
/// job's `output = ...` must not become the `--output` of a profile.
const CONFIGURED_COMMANDS: [&str; 3] = ["score", "check", "bench"];

/// Whether a flag can come from the environment or a file.
fn is_setting(arg: &clap::Arg) -> bool {
    !matches!(
        arg.get_action(),
        ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
    ) && arg.get_long().is_some_and(|long| !COMMAND_LINE_ONLY.contains(&long))
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read config file `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file `{}` is not valid TOML: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("config file `{}`: unknown setting `{key}`{suggestion}", path.display())]
    UnknownKey {
        path: PathBuf,
        key: String,
        suggestion: Suggestion,
    },
    #[error("config file `{}`: `{key}` {problem}", path.display())]
    BadValue {
        path: PathBuf,
        key: String,
        problem: String,
    },
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    Environment(String),
    File(PathBuf),
    Default,
}

impl Source {
    /// Higher wins: flag, environment, file, default.
    pub fn precedence(&self) -> u8 {
        match self {
            Source::Flag => 3,
            Source::Environment(_) => 2,
            Source::File(_) => 1,
            Source::Default => 0,
        }
    }
}

/// One setting of the command being run, as `--print-config` shows it.
#[derive(Debug, Clone)]
pub struct Setting {
    /// The long flag name, which is also the config file key.
    pub key: String,
    /// The values given (several for a repeatable flag); empty when unset.
    pub values: Vec<String>,
    pub source: Option<Source>,
    kind: ValueKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueKind {
    Switch,
    Count,
    Single,
    List,
}

/// The environment variable a flag reads.
pub fn environment_name(long: &str) -> String {
    format!("LAKESCORE_{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// The `LAKESCORE_*` variables that are set but that no setting of
/// `command` (or its subcommands) reads: a misspelling (`LAKESCORE_MODEE`)
/// would otherwise be ignored without a word, while a misspelled key in the
/// config file is an error. Each comes with the closest known name.
pub fn unknown_variables(command: &Command) -> Vec<(String, Suggestion)> {
    let mut known: Vec<String> = all_longs(command).iter().map(|long| environment_name(long)).collect();
    known.push(environment_name(CONFIG_FLAG));
    known.push(crate::logging::FILTER_VARIABLE.to_string());
    // Read by the library in every build: the GPU tests' switch.
    known.push("LAKESCORE_TEST_REQUIRE_GPU".to_string());
    known.push(lakescore::store::RETRIES_VARIABLE.to_string());
    known.push(lakescore::store::RETRY_SECONDS_VARIABLE.to_string());
    known.push(lakescore::mlflow::registry::CACHE_VARIABLE.to_string());
    // Collectors' credentials (`observe::http::Auth`): secrets, so never flags.
    for collector in ["PUSHGATEWAY", "LINEAGE"] {
        for part in ["TOKEN", "USER", "PASSWORD"] {
            known.push(format!("LAKESCORE_{collector}_{part}"));
        }
    }
    let mut unknown: Vec<(String, Suggestion)> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| name.starts_with("LAKESCORE_") && !known.contains(name))
        // The test build's fault injection (`lakescore::test_hooks`).
        .filter(|name| !(cfg!(feature = "test-hooks") && name.starts_with("LAKESCORE_TEST_")))
        .map(|name| {
            let hint = Suggestion::closest(&name, known.iter().map(String::as_str));
            (name, hint)
        })
        .collect();
    unknown.sort_by(|a, b| a.0.cmp(&b.0));
    unknown
}

/// Gives every flag of `command` (and of its subcommands) its environment
/// variable. Switches read `1`/`0`, `yes`/`no`, `true`/`false`, `on`/`off`;
/// repeatable flags read a comma-separated list (`LAKESCORE_ID_COLUMN=a,b`).
pub fn with_environment(command: Command) -> Command {
    fn add(command: Command) -> Command {
        command
            .mut_args(|arg| {
                if !is_setting(&arg) {
                    return arg;
                }
                let name = environment_name(arg.get_long().expect("settings have a long name"));
                match arg.get_action() {
                    ArgAction::SetTrue => arg.env(name).value_parser(clap::builder::BoolishValueParser::new()),
                    ArgAction::Append => arg.env(name).value_delimiter(','),
                    _ => arg.env(name),
                }
            })
            .mut_subcommands(add)
    }
    add(command)
}

/// The parsed command line with the environment and the config file applied,
/// and the effective settings of the command being run.
#[derive(Debug)]
pub struct Layered {
    pub matches: ArgMatches,
    pub settings: Vec<Setting>,
    /// Keys of the file this command does not take (another command's), to
    /// log once logging is set up.
    pub unused_keys: Vec<String>,
}

impl Layered {
    pub fn source_of(&self, key: &str) -> Option<&Source> {
        self.settings.iter().find(|s| s.key == key)?.source.as_ref()
    }
}

/// Parses `argv` against `command` (which [`with_environment`] has prepared),
/// applying the config file that `--config` or `LAKESCORE_CONFIG` names.
/// Command-line errors come back as clap errors, for clap to print.
pub fn parse(command: Command, argv: Vec<OsString>) -> Result<Result<Layered, SettingsError>, clap::Error> {
    let mut command = command;
    command.build();
    // A first, lenient parse finds the config file and what the command line
    // and environment already set (required flags may be in the file).
    let first = command.clone().ignore_errors(true).try_get_matches_from(&argv)?;
    let config = first.get_one::<PathBuf>(CONFIG_FLAG).cloned();
    let (leaf, leaf_matches) = leaf_of(&command, &first);
    let file = match &config {
        Some(path) => match file_tokens(&command, leaf, leaf_matches, path) {
            Ok(read) => read,
            Err(error) => return Ok(Err(error)),
        },
        None => FileSettings::default(),
    };
    let FileSettings {
        keys: injected,
        tokens,
        unused,
    } = file;
    let mut full = argv;
    full.extend(tokens);
    let matches = match command.clone().try_get_matches_from(&full) {
        Ok(matches) => matches,
        // An error about a flag the file set is the file's error.
        Err(error) => match caused_by(&error, &injected) {
            Some(key) => {
                let path = config.expect("values were injected from a file");
                let message = error.render().to_string();
                let first_line = message.lines().next().unwrap_or_default();
                return Ok(Err(SettingsError::BadValue {
                    path,
                    key,
                    problem: format!("cannot be used: {}", first_line.trim_start_matches("error: ")),
                }));
            }
            None => return Err(error),
        },
    };
    let (leaf, leaf_matches) = leaf_of(&command, &matches);
    let settings = leaf
        .get_arguments()
        .filter(|arg| is_setting(arg))
        .map(|arg| {
            let long = arg.get_long().expect("settings have a long name");
            let id = arg.get_id().as_str();
            let source = leaf_matches.value_source(id).map(|source| match source {
                ValueSource::CommandLine if injected.iter().any(|k| k == long) => {
                    Source::File(config.clone().expect("injected from a file"))
                }
                ValueSource::CommandLine => Source::Flag,
                ValueSource::EnvVariable => Source::Environment(environment_name(long)),
                _ => Source::Default,
            });
            let values = match kind_of(arg) {
                // The parsed switch: its variable may say `1` or `yes`.
                ValueKind::Switch => vec![leaf_matches.get_flag(id).to_string()],
                _ => leaf_matches
                    .get_raw(id)
                    .map(|raw| raw.map(|v| v.to_string_lossy().into_owned()).collect())
                    .unwrap_or_default(),
            };
            Setting {
                key: long.to_string(),
                values,
                source,
                kind: kind_of(arg),
            }
        })
        .collect();
    Ok(Ok(Layered {
        matches,
        settings,
        unused_keys: unused,
    }))
}

/// The key of the file whose flag a clap error is about, if it is one.
fn caused_by(error: &clap::Error, injected: &[String]) -> Option<String> {
    let Some(clap::error::ContextValue::String(arg)) = error.get(clap::error::ContextKind::InvalidArg) else {
        return None;
    };
    injected
        .iter()
        .find(|key| arg == &format!("--{key}") || arg.starts_with(&format!("--{key} ")))
        .cloned()
}

/// The subcommand being run (the innermost one) and its matches.
fn leaf_of<'a>(command: &'a Command, matches: &'a ArgMatches) -> (&'a Command, &'a ArgMatches) {
    let (mut command, mut matches) = (command, matches);
    while let Some((name, sub_matches)) = matches.subcommand() {
        match command.find_subcommand(name) {
            Some(sub) => {
                command = sub;
                matches = sub_matches;
            }
            None => break,
        }
    }
    (command, matches)
}

fn kind_of(arg: &clap::Arg) -> ValueKind {
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => ValueKind::Switch,
        ArgAction::Count => ValueKind::Count,
        ArgAction::Append => ValueKind::List,
        _ => ValueKind::Single,
    }
}

/// Every long flag of every command: to tell a key another command uses from
/// a misspelt one.
fn all_longs(command: &Command) -> Vec<String> {
    let mut longs: Vec<String> = command
        .get_arguments()
        .filter(|a| is_setting(a))
        .filter_map(|a| a.get_long())
        .map(str::to_string)
        .collect();
    for sub in command.get_subcommands() {
        longs.extend(all_longs(sub));
    }
    longs.sort();
    longs.dedup();
    longs
}

/// What a config file gives the command being run.
#[derive(Default)]
struct FileSettings {
    /// The keys applied.
    keys: Vec<String>,
    /// Their command-line tokens.
    tokens: Vec<OsString>,
    /// Known keys this command does not take.
    unused: Vec<String>,
}

/// The command-line tokens for the file's settings that the command line and
/// the environment leave unset, and the keys they came from.
fn file_tokens(
    root: &Command,
    leaf: &Command,
    leaf_matches: &ArgMatches,
    path: &Path,
) -> Result<FileSettings, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|error: toml::de::Error| SettingsError::Syntax {
        path: path.to_path_buf(),
        message: error.message().to_string(),
    })?;
    let known = all_longs(root);
    let configured = CONFIGURED_COMMANDS.contains(&leaf.get_name());
    let mut read = FileSettings::default();
    for (key, value) in &table {
        let bad = |problem: String| SettingsError::BadValue {
            path: path.to_path_buf(),
            key: key.clone(),
            problem,
        };
        if COMMAND_LINE_ONLY.contains(&key.as_str()) {
            return Err(bad("can only be given on the command line".into()));
        }
        let arg = leaf
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()))
            .filter(|a| configured || a.is_global_set());
        let Some(arg) = arg else {
            if known.iter().any(|k| k == key) {
                // A setting of another command (a file shared by `score` and
                // `check`, say): it does not apply to this one.
                read.unused.push(key.clone());
                continue;
            }
            return Err(SettingsError::UnknownKey {
                path: path.to_path_buf(),
                key: key.clone(),
                suggestion: Suggestion::closest(key, known.iter().map(String::as_str)),
            });
        };
        let id = arg.get_id().as_str();
        if matches!(
            leaf_matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue; // the command line or the environment wins
        }
        let flag = format!("--{key}");
        let tokens = &mut read.tokens;
        match (kind_of(arg), value) {
            (ValueKind::Switch, toml::Value::Boolean(on)) => {
                if *on {
                    tokens.push(flag.into());
                }
            }
            (ValueKind::Switch, other) => return Err(bad(format!("must be true or false, not {other}"))),
            (ValueKind::Count, toml::Value::Integer(n)) if (0..=8).contains(n) => {
                tokens.extend((0..*n).map(|_| OsString::from(&flag)));
            }
            (ValueKind::Count, other) => return Err(bad(format!("must be a count from 0 to 8, not {other}"))),
            (ValueKind::List, toml::Value::Array(items)) => {
                for item in items {
                    tokens.push(format!("{flag}={}", scalar(item).map_err(bad)?).into());
                }
            }
            (_, value) => tokens.push(format!("{flag}={}", scalar(value).map_err(bad)?).into()),
        }
        read.keys.push(key.clone());
    }
    Ok(read)
}

fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(text) => Ok(text.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(x) => Ok(x.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Datetime(time) => Ok(time.to_string()),
        other => Err(format!("must be a string or a number, not {}", other.type_str())),
    }
}

/// `--print-config`: the effective settings as a config file would hold them,
/// each with where its value came from.
pub fn render(command_name: &str, settings: &[Setting]) -> String {
    let mut text = format!(
        "# lakescore {command_name}: effective settings\n\
         # precedence: flag > environment (LAKESCORE_*) > config file > default\n"
    );
    let lines: Vec<(String, String)> = settings
        .iter()
        .map(|setting| {
            let line = match (setting.kind, setting.values.as_slice()) {
                (_, []) => format!("# {} (not set)", setting.key),
                (ValueKind::Switch, [value]) => format!("{} = {}", setting.key, value == "true"),
                // clap keeps a count as one value, the running total.
                (ValueKind::Count, [count, ..]) => format!("{} = {count}", setting.key),
                (ValueKind::List, values) => format!(
                    "{} = [{}]",
                    setting.key,
                    values.iter().map(|v| quoted(v)).collect::<Vec<_>>().join(", ")
                ),
                // URLs may carry a token in their query or credentials.
                (_, [value, ..]) if matches!(setting.key.as_str(), "pushgateway" | "lineage-url") => {
                    format!(
                        "{} = {}",
                        setting.key,
                        quoted(&lakescore::observe::http::redacted(value))
                    )
                }
                (_, [value, ..]) => format!("{} = {}", setting.key, quoted(value)),
            };
            let origin = match &setting.source {
                None => format!("or {}", environment_name(&setting.key)),
                Some(Source::Flag) => "flag".to_string(),
                Some(Source::Environment(name)) => format!("environment {name}"),
                Some(Source::File(path)) => format!("config file {}", path.display()),
                Some(Source::Default) => "default".to_string(),
            };
            (line, origin)
        })
        .collect();
    let width = lines.iter().map(|(line, _)| line.len()).max().unwrap_or(0);
    for (line, origin) in lines {
        let _ = writeln!(text, "{line:width$}  # {origin}");
    }
    text
}

/// A value as a TOML string (the file reader takes a string for any flag, so
/// `"1.10"` stays `1.10`).
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, Command};

    fn command() -> Command {
        with_environment(
            Command::new("lakescore")
                .arg(
                    Arg::new(CONFIG_FLAG)
                        .long(CONFIG_FLAG)
                        .global(true)
                        .value_parser(clap::value_parser!(PathBuf)),
                )
                .subcommand(
                    Command::new("score")
                        .arg(Arg::new("model").long("model").required(true))
                        .arg(Arg::new("threads").long("threads").default_value("0"))
                        .arg(Arg::new("id_column").long("id-column").action(ArgAction::Append))
                        .arg(
                            Arg::new("output_margin")
                                .long("output-margin")
                                .action(ArgAction::SetTrue),
                        ),
                )
                .subcommand(Command::new("check").arg(Arg::new("as_of").long("as-of"))),
        )
    }

    fn parse_with(file: &str, argv: &[&str]) -> Result<Layered, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lakescore.toml");
        std::fs::write(&path, file).unwrap();
        let mut full: Vec<OsString> = argv.iter().map(OsString::from).collect();
        full.push("--config".into());
        full.push(path.into());
        match parse(command(), full) {
            Ok(Ok(layered)) => Ok(layered),
            Ok(Err(error)) => Err(error.to_string()),
            Err(error) => Err(error.to_string()),
        }
    }

    fn setting<'a>(layered: &'a Layered, key: &str) -> &'a Setting {
        layered.settings.iter().find(|s| s.key == key).unwrap()
    }

    #[test]
    fn the_file_fills_what_the_command_line_leaves_unset() {
        let file = "model = \"m.json\"\nthreads = 3\nid-column = [\"a\", \"b\"]\noutput-margin = true\nas-of = \"2026-01-01\"\n";
        let layered = parse_with(file, &["lakescore", "score", "--threads", "5"]).unwrap();
        let model = setting(&layered, "model");
        assert_eq!(model.values, ["m.json"]);
        assert!(matches!(model.source, Some(Source::File(_))));
        let threads = setting(&layered, "threads");
        assert_eq!(
            (threads.values.as_slice(), &threads.source),
            (&["5".to_string()][..], &Some(Source::Flag))
        );
        assert_eq!(setting(&layered, "id-column").values, ["a", "b"]);
        assert_eq!(setting(&layered, "output-margin").values, ["true"]);
        // `as-of` belongs to another command: not an error, not applied.
        assert!(layered.settings.iter().all(|s| s.key != "as-of"));
        let printed = render("score", &layered.settings);
        assert!(printed.contains("threads = \"5\""), "{printed}");
        assert!(printed.contains("id-column = [\"a\", \"b\"]"), "{printed}");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let error = parse_with("modle = \"m\"\n", &["lakescore", "score"]).unwrap_err();
        assert!(
            error.contains("unknown setting `modle`; did you mean `model`?"),
            "{error}"
        );
        let error = parse_with("model = \"m\"\noutput-margin = \"yes\"\n", &["lakescore", "score"]).unwrap_err();
        assert!(error.contains("`output-margin` must be true or false"), "{error}");
        let error = parse_with("model = [\"m\"]\n", &["lakescore", "score"]).unwrap_err();
        assert!(
            error.contains("`model` must be a string or a number, not array"),
            "{error}"
        );
        let error = parse_with("config = \"other.toml\"\n", &["lakescore", "score", "--model", "m"]).unwrap_err();
        assert!(error.contains("can only be given on the command line"), "{error}");
    }

    #[test]
    fn environment_names_follow_the_long_flag() {
        assert_eq!(environment_name("metrics-file"), "LAKESCORE_METRICS_FILE");
        let command = command();
        let score = command.find_subcommand("score").unwrap();
        let model = score.get_arguments().find(|a| a.get_id() == "model").unwrap();
        assert_eq!(model.get_env().unwrap(), "LAKESCORE_MODEL");
    }
}
