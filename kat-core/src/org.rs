//! Organizations: every object, file, task and token belongs to one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

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
