//! Organizations: every object, file, task and token belongs to one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::{Error, Result};

/// An organization's code: a lower-case slug of 1 to 32 characters (`[a-z0-9-_]`), unique.
///
/// ```
/// use kat_core::org::OrgCode;
/// assert_eq!(OrgCode::new("acme").unwrap().as_str(), "acme");
/// assert!(OrgCode::new("Acme Corp").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrgCode(String);

impl OrgCode {
    /// Validate a code.
    ///
    /// # Errors
    /// [`Error::Invalid`] saying what is wrong.
    pub fn new(code: &str) -> Result<Self> {
        if code.is_empty() || code.len() > 32 {
            return Err(Error::invalid(
                "organization",
                format!("an organization code is 1 to 32 characters, got {code:?}"),
            ));
        }
        if let Some(c) = code
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
        {
            return Err(Error::invalid(
                "organization",
                format!(
                    "organization code {code:?}: character {c:?} is not allowed (use a-z, 0-9, - and _)"
                ),
            ));
        }
        Ok(OrgCode(code.to_string()))
    }

    /// The code as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrgCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for OrgCode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        OrgCode::new(s)
    }
}

impl TryFrom<String> for OrgCode {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        OrgCode::new(&s)
    }
}

impl From<OrgCode> for String {
    fn from(c: OrgCode) -> String {
        c.0
    }
}

/// An organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organization {
    /// Its unique code.
    pub code: OrgCode,
    /// Its display name.
    pub name: String,
    /// When it was created. A token for the organization issued (`iat`) in an earlier second is
    /// refused, so that tokens of a deleted organization stay dead when its code is used again.
    /// Records written without it read as the epoch.
    #[serde(default = "epoch")]
    pub created_at: Timestamp,
}

fn epoch() -> Timestamp {
    Timestamp::from_millis(0)
}

/// The longest display name of an organization, in characters (the original's 126).
pub const MAX_NAME_CHARS: usize = 126;

impl Organization {
    /// A new organization, created now.
    ///
    /// ```
    /// use kat_core::org::{OrgCode, Organization};
    /// let o = Organization::new(OrgCode::new("acme")?, "Acme");
    /// assert_eq!(o.name, "Acme");
    /// # Ok::<(), kat_core::Error>(())
    /// ```
    pub fn new(code: OrgCode, name: impl Into<String>) -> Self {
        Organization {
            code,
            name: name.into(),
            created_at: Timestamp::now(),
        }
    }

    /// Check a display name: 1 to [`MAX_NAME_CHARS`] characters, not only blanks, no control
    /// characters.
    ///
    /// # Errors
    /// [`Error::Invalid`] at `name` saying what is wrong.
    pub fn validate_name(name: &str) -> Result<()> {
        if name.trim().is_empty() {
            return Err(Error::invalid("name", "an organization needs a name"));
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(Error::invalid(
                "name",
                format!("an organization's name is at most {MAX_NAME_CHARS} characters"),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(Error::invalid(
                "name",
                "an organization's name may not contain control characters",
            ));
        }
        Ok(())
    }

    /// Whether a token for this organization issued at `iat` (unix seconds) may be used: only one
    /// issued in or after the second the organization was created.
    pub fn admits_token_issued_at(&self, iat: i64) -> bool {
        iat >= self.created_at.as_secs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert!(OrgCode::new("a-b_1").is_ok());
        for bad in ["", "A", "a b", "a|b", "a/b", &"x".repeat(33)] {
            assert!(OrgCode::new(bad).is_err(), "{bad}");
        }
        let c: OrgCode = serde_json::from_str("\"acme\"").unwrap();
        assert_eq!(c.as_str(), "acme");
        assert!(serde_json::from_str::<OrgCode>("\"ACME\"").is_err());
    }
}
