//! Strict decoding of paths and query strings (invalid UTF-8 is an error, never replaced), and the
//! common list parameters (`limit`, `offset`, `search`, `ordering`).

use percent_encoding::percent_decode_str;

use crate::error::{ApiError, ApiResult};

/// Decode one percent-encoded path segment (`%2F` becomes `/` only here, after splitting).
pub(crate) fn decode_segment(raw: &str) -> ApiResult<String> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| ApiError::parse("the path is not valid UTF-8 once percent-decoded"))
}

fn decode_component(raw: &str) -> ApiResult<String> {
    let plus = raw.replace('+', " ");
    percent_decode_str(&plus)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| ApiError::parse("the query string is not valid UTF-8 once percent-decoded"))
}

/// A decoded query string: name/value pairs in order.
#[derive(Debug, Default, Clone)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub(crate) fn parse(raw: Option<&str>) -> ApiResult<Self> {
        let mut pairs = Vec::new();
        if let Some(raw) = raw {
            for piece in raw.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
                pairs.push((decode_component(k)?, decode_component(v)?));
            }
        }
        if pairs.len() > 1000 {
            return Err(ApiError::invalid("", "too many query parameters"));
        }
        Ok(Query { pairs })
    }

    pub(crate) fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// Refuse any parameter not in `known`.
    pub(crate) fn only(&self, known: &[&str]) -> ApiResult<()> {
        for (k, _) in &self.pairs {
            if !known.contains(&k.as_str()) {
                let list = if known.is_empty() {
                    "no query parameters".to_string()
                } else {
                    known.join(", ")
                };
                return Err(ApiError::unknown_param(k, &list));
            }
        }
        Ok(())
    }

    /// Every value of a parameter.
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The single value of a parameter; given twice is a 400.
    pub(crate) fn one(&self, name: &str) -> ApiResult<Option<&str>> {
        let v = self.all(name);
        match v.len() {
            0 => Ok(None),
            1 => Ok(Some(v[0])),
            _ => Err(ApiError::invalid(
                name,
                format!("the parameter {name:?} may be given once"),
            )),
        }
    }

    /// A `true`/`false` parameter (`?enabled=true`); anything else is a 400 naming it.
    pub(crate) fn flag(&self, name: &str) -> ApiResult<Option<bool>> {
        match self.one(name)? {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err(ApiError::invalid(name, format!("{name} is true or false"))),
        }
    }

    fn number(&self, name: &str) -> ApiResult<Option<u64>> {
        self.one(name)?
            .map(|s| {
                s.trim().parse::<u64>().map_err(|_| {
                    ApiError::invalid(name, format!("{name} must be a whole number, got {s:?}"))
                })
            })
            .transpose()
    }
}

/// The paging and matching parameters every list takes.
#[derive(Debug, Clone)]
pub(crate) struct ListParams {
    /// `limit` as given (the permission check compares it exactly).
    pub(crate) raw_limit: Option<u64>,
    /// The page size actually used (defaulted and capped).
    pub(crate) limit: usize,
    pub(crate) offset: usize,
    pub(crate) search: Option<String>,
    pub(crate) ordering: Option<String>,
}

impl ListParams {
    pub(crate) fn parse(q: &Query, default_limit: usize, max_limit: usize) -> ApiResult<Self> {
        let raw_limit = q.number("limit")?;
        if raw_limit == Some(0) {
            return Err(ApiError::invalid("limit", "limit must be at least 1"));
        }
        let limit = raw_limit
            .map_or(default_limit, |l| usize::try_from(l).unwrap_or(usize::MAX))
            .min(max_limit)
            .max(1);
        let offset = q
            .number("offset")?
            .map_or(0, |o| usize::try_from(o).unwrap_or(usize::MAX));
        let search = q.one("search")?.map(str::to_string);
        let ordering = q.one("ordering")?.map(str::to_string);
        if ordering.as_deref() == Some("") || ordering.as_deref() == Some("-") {
            return Err(ApiError::invalid("ordering", "ordering names a field"));
        }
        Ok(ListParams {
            raw_limit,
            limit,
            offset,
            search,
            ordering,
        })
    }
}

/// `next` and `previous` as absolute URLs: the request's path and parameters with `limit` and
/// `offset` replaced.
pub(crate) fn page_links(
    base: &str,
    path: &str,
    q: &Query,
    p: &ListParams,
    count: u64,
) -> (Option<String>, Option<String>) {
    let link = |offset: usize| -> String {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in q.pairs() {
            if k != "limit" && k != "offset" {
                ser.append_pair(k, v);
            }
        }
        ser.append_pair("limit", &p.limit.to_string());
        if offset > 0 {
            ser.append_pair("offset", &offset.to_string());
        }
        format!("{base}{path}?{}", ser.finish())
    };
    let end = p.offset.saturating_add(p.limit);
    let next = ((end as u64) < count).then(|| link(end));
    let previous = (p.offset > 0).then(|| link(p.offset.saturating_sub(p.limit)));
    (next, previous)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_decoding() {
        assert_eq!(decode_segment("internet%7Ca%2Fb").unwrap(), "internet|a/b");
        assert!(decode_segment("%FF").is_err());
        let q = Query::parse(Some("a=1&a=2&b=x+y%20z&c")).unwrap();
        assert_eq!(q.all("a"), vec!["1", "2"]);
        assert_eq!(q.one("b").unwrap(), Some("x y z"));
        assert_eq!(q.one("c").unwrap(), Some(""));
        assert!(q.one("a").is_err());
        assert!(Query::parse(Some("x=%C3%28")).is_err());
        assert!(q.only(&["a", "b"]).is_err());
        assert!(q.only(&["a", "b", "c"]).is_ok());
    }

    #[test]
    fn list_params_and_links() {
        let q = Query::parse(Some("limit=10&offset=10&port=80")).unwrap();
        let p = ListParams::parse(&q, 100, 1000).unwrap();
        assert_eq!((p.limit, p.offset, p.raw_limit), (10, 10, Some(10)));
        let (n, prev) = page_links("http://h", "/api/v1/objects/ipport/", &q, &p, 25);
        assert_eq!(
            n.as_deref(),
            Some("http://h/api/v1/objects/ipport/?port=80&limit=10&offset=20")
        );
        assert_eq!(
            prev.as_deref(),
            Some("http://h/api/v1/objects/ipport/?port=80&limit=10")
        );
        let big = Query::parse(Some("limit=100000")).unwrap();
        assert_eq!(ListParams::parse(&big, 100, 1000).unwrap().limit, 1000);
        assert!(ListParams::parse(&Query::parse(Some("limit=x")).unwrap(), 100, 1000).is_err());
        assert!(ListParams::parse(&Query::parse(Some("limit=0")).unwrap(), 100, 1000).is_err());
    }
}
