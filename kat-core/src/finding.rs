//! Finding types: the catalogue (`finding_types.json`, a map from code to its description) and the
//! risk-to-score table of the original.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::object::check_code;
use crate::{Error, Result};

/// How serious a finding type is.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    /// Advice only (score 0.0).
    #[default]
    Recommendation,
    /// Low (score 3.9).
    Low,
    /// Medium (score 6.9).
    Medium,
    /// High (score 8.9).
    High,
    /// Critical (score 10.0).
    Critical,
}

impl Risk {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Recommendation => "recommendation",
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
            Risk::Critical => "critical",
        }
    }

    /// The score of the original's `SEVERITY_SCORE_LOOKUP`.
    ///
    /// ```
    /// use kat_core::finding::Risk;
    /// assert_eq!(Risk::High.score(), 8.9);
    /// ```
    pub fn score(self) -> f64 {
        match self {
            Risk::Critical => 10.0,
            Risk::High => 8.9,
            Risk::Medium => 6.9,
            Risk::Low => 3.9,
            Risk::Recommendation => 0.0,
        }
    }
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Risk {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "recommendation" => Ok(Risk::Recommendation),
            "low" => Ok(Risk::Low),
            "medium" => Ok(Risk::Medium),
            "high" => Ok(Risk::High),
            "critical" => Ok(Risk::Critical),
            _ => Err(Error::invalid(
                "risk",
                format!(
                    "unknown risk {s:?}; expected critical, high, medium, low or recommendation"
                ),
            )),
        }
    }
}

/// One entry of `finding_types.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingTypeDef {
    /// Short name.
    #[serde(default)]
    pub name: String,
    /// What the finding means.
    #[serde(default)]
    pub description: String,
    /// Where to read more.
    #[serde(default)]
    pub source: String,
    /// How serious it is.
    pub risk: Risk,
    /// What can happen.
    #[serde(default)]
    pub impact: String,
    /// What to do.
    #[serde(default)]
    pub recommendation: String,
}

impl FindingTypeDef {
    /// The score of its risk.
    pub fn score(&self) -> f64 {
        self.risk.score()
    }
}

/// The finding-type catalogue, by code.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FindingTypes(pub BTreeMap<String, FindingTypeDef>);

impl FindingTypes {
    /// Parse the original's `finding_types.json` shape; `origin` names the source in errors.
    ///
    /// ```
    /// use kat_core::finding::FindingTypes;
    /// let t = FindingTypes::parse(r#"{"KAT-NO-SPF": {"name": "No SPF", "description": "", "source": "",
    ///     "risk": "medium", "impact": "", "recommendation": ""}}"#, "finding_types.json").unwrap();
    /// assert_eq!(t.get("KAT-NO-SPF").unwrap().score(), 6.9);
    /// ```
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the origin, the code and the field.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let raw: BTreeMap<String, serde_json::Value> = serde_json::from_str(text).map_err(|e| {
            Error::invalid(origin, format!("not a JSON object of finding types: {e}"))
        })?;
        let mut out = BTreeMap::new();
        for (code, v) in raw {
            check_code(&code).map_err(|e| e.within(&format!("{origin}: {code}")))?;
            let def: FindingTypeDef = serde_json::from_value(v)
                .map_err(|e| Error::invalid(format!("{origin}: {code}"), e.to_string()))?;
            out.insert(code, def);
        }
        Ok(FindingTypes(out))
    }

    /// Read and parse a file.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the file, or [`Error::Io`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid(path.display().to_string(), format!("cannot read: {e}")))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The entry for `code`.
    pub fn get(&self, code: &str) -> Option<&FindingTypeDef> {
        self.0.get(code)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_follow_the_original_table() {
        assert_eq!(Risk::Critical.score(), 10.0);
        assert_eq!(Risk::High.score(), 8.9);
        assert_eq!(Risk::Medium.score(), 6.9);
        assert_eq!(Risk::Low.score(), 3.9);
        assert_eq!(Risk::Recommendation.score(), 0.0);
        assert!("HIGH".parse::<Risk>().is_ok());
        assert!("severe".parse::<Risk>().is_err());
    }

    #[test]
    fn errors_name_origin_code_and_field() {
        let e = FindingTypes::parse(r#"{"KAT-X": {"risk": "severe"}}"#, "ft.json").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("ft.json: KAT-X"), "{s}");
        assert!(s.contains("severe"), "{s}");
        let e = FindingTypes::parse(r#"{"KAT-X": {"risk": "low", "colour": 1}}"#, "ft.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour"), "{e}");
        let e = FindingTypes::parse(r#"{"BAD CODE": {"risk": "low"}}"#, "ft.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("BAD CODE"), "{e}");
        assert!(FindingTypes::parse("[]", "ft.json").is_err());
    }
}
