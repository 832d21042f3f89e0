//! The PMI-1 line format: `cmd=NAME key=value key=value\n`.
//!
//! Tokens are separated by spaces; a token without `=` continues the
//! previous value (free-text fields such as an abort message contain spaces).
//! Values must not contain newlines.

/// Longest line either side accepts.
pub const MAX_LINE: usize = 4096;
/// Longest value of a `put` (advertised by `get_maxes`).
pub const VALLEN_MAX: usize = 1024;
/// Longest key (advertised by `get_maxes`).
pub const KEYLEN_MAX: usize = 64;
/// Longest key-value space name (advertised by `get_maxes`).
pub const KVSNAME_MAX: usize = 256;

/// One PMI command or reply: an ordered list of key-value pairs whose first
/// key is `cmd`.
///
/// ```
/// use weft::pmi::wire::Line;
/// let l = Line::parse("cmd=put kvsname=k key=a value=1").unwrap();
/// assert_eq!(l.cmd(), "put");
/// assert_eq!(l.get("value"), Some("1"));
/// assert_eq!(Line::new("barrier_out").to_text(), "cmd=barrier_out\n");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pairs: Vec<(String, String)>,
}

impl Line {
    /// A line for command `cmd` with no other fields.
    pub fn new(cmd: &str) -> Line {
        Line {
            pairs: vec![("cmd".into(), cmd.into())],
        }
    }

    /// Adds `key=value`.
    pub fn with(mut self, key: &str, value: impl ToString) -> Line {
        self.pairs.push((key.into(), value.to_string()));
        self
    }

    /// Parses one line (without or with its trailing newline).
    pub fn parse(text: &str) -> Result<Line, String> {
        let text = text.strip_suffix('\n').unwrap_or(text);
        if text.len() > MAX_LINE {
            return Err(format!("line of {} bytes exceeds {MAX_LINE}", text.len()));
        }
        let mut pairs: Vec<(String, String)> = Vec::new();
        for token in text.split(' ').filter(|t| !t.is_empty()) {
            match token.split_once('=') {
                Some((k, v)) if !k.is_empty() => pairs.push((k.into(), v.into())),
                _ => match pairs.last_mut() {
                    Some((_, v)) => {
                        v.push(' ');
                        v.push_str(token);
                    }
                    None => return Err(format!("{text:?} does not start with a key=value pair")),
                },
            }
        }
        match pairs.first() {
            Some((k, _)) if k == "cmd" || k == "mcmd" => Ok(Line { pairs }),
            _ => Err(format!("{text:?} does not start with cmd=")),
        }
    }

    /// The command name.
    pub fn cmd(&self) -> &str {
        &self.pairs[0].1
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The line as sent, with its newline.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for (i, (k, v)) in self.pairs.iter().enumerate() {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(k);
            s.push('=');
            s.push_str(v);
        }
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_free_text() {
        let l = Line::parse("cmd=abort exitcode=3 error_msg=rank 2 gave up\n").unwrap();
        assert_eq!(l.get("exitcode"), Some("3"));
        assert_eq!(l.get("error_msg"), Some("rank 2 gave up"));
        assert_eq!(Line::parse(&l.to_text()).unwrap(), l);
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert!(Line::parse("").is_err());
        assert!(Line::parse("hello").is_err());
        assert!(Line::parse("key=value cmd=put").is_err());
        assert!(Line::parse(&"x".repeat(MAX_LINE + 1)).is_err());
        assert!(Line::parse("=3").is_err());
    }
}
