//! How a hub setting is written and shown: the machinery behind the one
//! table of settings in [`crate::config`].
//!
//! Owns the [`Value`] trait (how a setting's type is written as a flag
//! and as a TOML value, checked, and shown as a default), [`Seconds`]
//! (durations as decimal seconds), [`Setting`] (what the table says of one
//! setting, for help and docs) and the rendering of docs/hub.md's
//! configuration table ([`docs_table`]). With the `clap` feature, the
//! glue that turns the table into `wsline serve`'s flags. It declares no
//! setting itself.

use std::fmt::{self, Debug};
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde::Deserialize;

use crate::config::LogFormat;
use crate::engine::{EngineKind, Fsync};

/// A setting's type: how a flag and a TOML value are written and checked,
/// and how its default is shown in `--help` and docs/hub.md.
pub trait Value: Clone + Sized + 'static {
    /// What one occurrence of the flag parses into.
    type Flag: Clone + Send + Sync + 'static;
    /// What the TOML key holds, and what the flags give together.
    type Raw: DeserializeOwned + Clone + Debug;
    /// Whether the flag may be given several times (a list).
    const REPEATABLE: bool = false;
    /// Parses one flag value.
    fn parse_flag(s: &str) -> Result<Self::Flag, String>;
    /// The flags' values together (in order), `None` without any.
    fn gather(flags: Vec<Self::Flag>) -> Option<Self::Raw>;
    /// The setting's value from what the flags or the file gave.
    fn from_raw(raw: Self::Raw) -> Result<Self, String>;
    /// How this value is shown as a default.
    fn show(&self) -> Shown;
}

/// A default as `--help` and docs/hub.md show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shown {
    /// A value as written on the command line (`100`, `0.5`, `memory`);
    /// in code style in the docs.
    Value(String),
    /// A word for the absence of a value (`none`, `any`), in plain text.
    Word(&'static str),
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(v) => f.write_str(v),
            Self::Word(w) => f.write_str(w),
        }
    }
}

/// Types written the same way on the command line and in TOML, shown
/// with `Display`.
macro_rules! plain_values {
    ($($t:ty),*) => {$(
        impl Value for $t {
            type Flag = $t;
            type Raw = $t;
            fn parse_flag(s: &str) -> Result<Self, String> {
                s.parse().map_err(|e: <$t as FromStr>::Err| e.to_string())
            }
            fn gather(flags: Vec<Self>) -> Option<Self> {
                flags.into_iter().last()
            }
            fn from_raw(raw: Self) -> Result<Self, String> {
                Ok(raw)
            }
            fn show(&self) -> Shown {
                Shown::Value(self.to_string())
            }
        }
    )*};
}

plain_values!(usize, u32, String, SocketAddr);

/// Names (`memory`, `json`): a TOML string, checked by `FromStr`.
macro_rules! named_values {
    ($($t:ty),*) => {$(
        impl Value for $t {
            type Flag = String;
            type Raw = String;
            fn parse_flag(s: &str) -> Result<String, String> {
                s.parse::<$t>()?;
                Ok(s.to_owned())
            }
            fn gather(flags: Vec<String>) -> Option<String> {
                flags.into_iter().last()
            }
            fn from_raw(raw: String) -> Result<Self, String> {
                raw.parse()
            }
            fn show(&self) -> Shown {
                Shown::Value(self.to_string())
            }
        }
    )*};
}

named_values!(EngineKind, LogFormat);

/// `fsync`: the word `always`, or seconds (a TOML number or string).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum FsyncRaw {
    /// `"always"`, or seconds written as a string.
    Word(String),
    /// Seconds.
    Secs(f64),
}

impl Value for Fsync {
    type Flag = Fsync;
    type Raw = FsyncRaw;
    fn parse_flag(s: &str) -> Result<Fsync, String> {
        s.parse()
    }
    fn gather(flags: Vec<Fsync>) -> Option<FsyncRaw> {
        flags.last().map(|f| FsyncRaw::Word(f.to_string()))
    }
    fn from_raw(raw: FsyncRaw) -> Result<Self, String> {
        match raw {
            FsyncRaw::Word(s) => s.parse(),
            FsyncRaw::Secs(secs) => secs.to_string().parse(),
        }
    }
    fn show(&self) -> Shown {
        Shown::Value(self.to_string())
    }
}

/// An optional text (a key, a secret): unset by default.
impl Value for Option<String> {
    type Flag = String;
    type Raw = String;
    fn parse_flag(s: &str) -> Result<String, String> {
        Ok(s.to_owned())
    }
    fn gather(flags: Vec<String>) -> Option<String> {
        flags.into_iter().last()
    }
    fn from_raw(raw: String) -> Result<Self, String> {
        Ok(Some(raw))
    }
    fn show(&self) -> Shown {
        match self {
            Some(s) => Shown::Value(s.clone()),
            None => Shown::Word("none"),
        }
    }
}

/// A list: the flag repeated, a TOML array. Flags replace the file's
/// list, they do not add to it.
impl Value for Vec<String> {
    type Flag = String;
    type Raw = Vec<String>;
    const REPEATABLE: bool = true;
    fn parse_flag(s: &str) -> Result<String, String> {
        Ok(s.to_owned())
    }
    fn gather(flags: Vec<String>) -> Option<Vec<String>> {
        (!flags.is_empty()).then_some(flags)
    }
    fn from_raw(raw: Vec<String>) -> Result<Self, String> {
        Ok(raw)
    }
    fn show(&self) -> Shown {
        if self.is_empty() {
            Shown::Word("none")
        } else {
            Shown::Value(self.join(", "))
        }
    }
}

/// A duration in seconds, decimals allowed (`20`, `0.5`): flags and TOML
/// (an integer or a float) alike. Never negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl Seconds {
    fn from_f64(v: f64) -> Result<Self, String> {
        if !v.is_finite() || v < 0.0 {
            return Err(format!("{v}: seconds must be zero or more"));
        }
        Duration::try_from_secs_f64(v)
            .map(Seconds)
            .map_err(|_| format!("{v}: too many seconds"))
    }
}

impl FromStr for Seconds {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let v: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a number of seconds (e.g. 20 or 0.5)"))?;
        Self::from_f64(v).map_err(|_| format!("{s:?}: seconds must be zero or more"))
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // f64 takes TOML integers too.
        Self::from_f64(f64::deserialize(d)?).map_err(D::Error::custom)
    }
}

/// `20`, `0.5`.
fn show_secs(d: Duration) -> Shown {
    Shown::Value(d.as_secs_f64().to_string())
}

/// A duration in seconds.
impl Value for Duration {
    type Flag = Seconds;
    type Raw = Seconds;
    fn parse_flag(s: &str) -> Result<Seconds, String> {
        s.parse()
    }
    fn gather(flags: Vec<Seconds>) -> Option<Seconds> {
        flags.into_iter().last()
    }
    fn from_raw(raw: Seconds) -> Result<Self, String> {
        Ok(raw.0)
    }
    fn show(&self) -> Shown {
        show_secs(*self)
    }
}

/// A duration in seconds where 0 turns the timer off (`None`).
impl Value for Option<Duration> {
    type Flag = Seconds;
    type Raw = Seconds;
    fn parse_flag(s: &str) -> Result<Seconds, String> {
        s.parse()
    }
    fn gather(flags: Vec<Seconds>) -> Option<Seconds> {
        flags.into_iter().last()
    }
    fn from_raw(raw: Seconds) -> Result<Self, String> {
        Ok((!raw.0.is_zero()).then_some(raw.0))
    }
    fn show(&self) -> Shown {
        show_secs(self.unwrap_or_default())
    }
}

/// What the table says of one setting (see [`crate::config::settings`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The TOML key; the flag is the same with `-` for `_`.
    pub key: &'static str,
    /// The flag's value in `--help` and the docs (`N`, `SECS`).
    pub value_name: &'static str,
    /// One line for `--help` (the default is added to it).
    pub help: &'static str,
    /// The meaning column of docs/hub.md (Markdown).
    pub docs: &'static str,
    /// The flag may be repeated; the key is an array.
    pub repeatable: bool,
    /// The default.
    pub default: Shown,
}

impl Setting {
    /// The long flag, without `--`: the key with `-` for `_`.
    pub fn flag(&self) -> String {
        self.key.replace('_', "-")
    }

    /// The environment variable: `WSLINE_` and the key in capitals
    /// (`WSLINE_LISTEN`, `WSLINE_API_KEY`).
    pub fn env(&self) -> String {
        format!("WSLINE_{}", self.key.to_ascii_uppercase())
    }

    /// The `--help` line: the help and the default.
    pub fn help_line(&self) -> String {
        format!("{} [default: {}]", self.help, self.default)
    }

    /// The setting's row of docs/hub.md's table.
    pub fn docs_row(&self) -> String {
        let (repeat, array) = if self.repeatable {
            (" (repeatable)", " (array)")
        } else {
            ("", "")
        };
        let default = match &self.default {
            Shown::Value(v) => format!("`{v}`"),
            Shown::Word(w) => (*w).to_owned(),
        };
        format!(
            "| `--{} {}`{repeat} | `{}`{array} | {default} | {} |",
            self.flag(),
            self.value_name,
            self.key,
            self.docs
        )
    }
}

/// The line before the generated table in docs/hub.md.
pub const DOCS_TABLE_START: &str = "<!-- settings table: generated from crates/hub/src/config.rs; regenerate with WSLINE_BLESS=1 cargo test -p wsline-hub --lib docs_table -->";
/// The line after it.
pub const DOCS_TABLE_END: &str = "<!-- end of the settings table -->";

/// docs/hub.md's configuration table for `settings`: a header, the
/// `--config` row, a row per setting in table order.
pub fn docs_table(settings: &[Setting]) -> String {
    let mut out = String::from(
        "| flag | key | default | meaning |\n\
         | --- | --- | --- | --- |\n\
         | `--config FILE` | — | none | the TOML file with these keys, `[channels.\"pattern\"]` tables, the `[hooks]` table and the `[webhooks]` table ([hooks.md](hooks.md)) |\n",
    );
    for s in settings {
        out.push_str(&s.docs_row());
        out.push('\n');
    }
    out
}

/// The clap argument of a setting of type `T`.
#[cfg(feature = "clap")]
pub(crate) fn arg<T: Value>(setting: &Setting) -> clap::Arg {
    let arg = clap::Arg::new(setting.key)
        .long(setting.flag())
        .value_name(setting.value_name)
        .help(setting.help_line())
        // The environment stands in for a missing flag, so it comes after
        // flags and before the file; its values are never shown (secrets).
        .env(setting.env())
        .hide_env_values(true)
        .value_parser(clap::builder::ValueParser::new(T::parse_flag));
    // A list from the environment is comma-separated (flags may be too).
    let arg = if T::REPEATABLE {
        arg.value_delimiter(',')
    } else {
        arg
    };
    arg.action(if T::REPEATABLE {
        clap::ArgAction::Append
    } else {
        clap::ArgAction::Set
    })
}

/// What the flags of a setting of type `T` gave, if any.
#[cfg(feature = "clap")]
pub(crate) fn from_matches<T: Value>(
    matches: &clap::ArgMatches,
    key: &str,
) -> Result<Option<T::Raw>, clap::Error> {
    let values = matches
        .try_get_many::<T::Flag>(key)
        .map_err(|e| clap::Error::raw(clap::error::ErrorKind::ValueValidation, e))?;
    Ok(values.and_then(|v| T::gather(v.cloned().collect())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_take_decimals_and_integers_and_refuse_negatives() {
        assert_eq!("0.5".parse(), Ok(Seconds(Duration::from_millis(500))));
        assert_eq!("20".parse(), Ok(Seconds(Duration::from_secs(20))));
        assert!("-1".parse::<Seconds>().is_err());
        assert!("abc".parse::<Seconds>().is_err());
        assert!("1e30".parse::<Seconds>().is_err(), "no panic on overflow");
        #[derive(Deserialize)]
        struct T {
            s: Seconds,
        }
        let t: T = toml::from_str("s = 3").unwrap();
        assert_eq!(t.s, Seconds(Duration::from_secs(3)));
        let t: T = toml::from_str("s = 0.25").unwrap();
        assert_eq!(t.s, Seconds(Duration::from_millis(250)));
        assert!(toml::from_str::<T>("s = -1").is_err());
        assert!(toml::from_str::<T>("s = \"1\"").is_err());
    }

    #[test]
    fn zero_seconds_turn_an_optional_timer_off() {
        let off = <Option<Duration>>::from_raw(Seconds(Duration::ZERO)).unwrap();
        assert_eq!(off, None);
        assert_eq!(off.show(), Shown::Value("0".into()));
        assert_eq!(
            Duration::from_millis(1500).show(),
            Shown::Value("1.5".into())
        );
    }
}
