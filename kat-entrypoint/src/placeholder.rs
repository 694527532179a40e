//! `{file/<digits>}` placeholders: found anywhere inside an argument, several per argument.

use std::collections::HashMap;
use std::path::PathBuf;

const OPEN: &[u8] = b"{file/";

/// Finds the placeholders in `arg`: `(start, end, id)` with `arg[start..end] == "{file/<id>}"`, in order.
fn find(arg: &[u8]) -> Vec<(usize, usize, &str)> {
    let mut found = Vec::new();
    let mut i = 0;
    while i + OPEN.len() < arg.len() {
        if arg[i..].starts_with(OPEN) {
            let digits_start = i + OPEN.len();
            let digits_end = arg[digits_start..]
                .iter()
                .position(|b| !b.is_ascii_digit())
                .map_or(arg.len(), |p| digits_start + p);
            if digits_end > digits_start && arg.get(digits_end) == Some(&b'}') {
                // ASCII digits are valid UTF-8.
                let id = std::str::from_utf8(&arg[digits_start..digits_end]).unwrap_or_default();
                found.push((i, digits_end + 1, id));
                i = digits_end + 1;
                continue;
            }
        }
        i += 1;
    }
    found
}

/// The distinct file ids referenced by `args`, in order of first appearance.
pub(crate) fn file_ids<'a>(args: impl IntoIterator<Item = &'a [u8]>) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for arg in args {
        for (_, _, id) in find(arg) {
            if !ids.iter().any(|known| known == id) {
                ids.push(id.to_owned());
            }
        }
    }
    ids
}

/// `arg` with every placeholder replaced by the local path of its file. Ids missing from `paths` stay as they are.
pub(crate) fn substitute(arg: &[u8], paths: &HashMap<String, PathBuf>) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::with_capacity(arg.len());
    let mut last = 0;
    for (start, end, id) in find(arg) {
        if let Some(path) = paths.get(id) {
            out.extend_from_slice(&arg[last..start]);
            out.extend_from_slice(path.as_os_str().as_bytes());
            last = end;
        }
    }
    out.extend_from_slice(&arg[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ids_anywhere() {
        let args: [&[u8]; 4] = [
            b"--in={file/12},{file/12}:{file/3}",
            b"{file/}{file/x}{file/4",
            b"{{file/7}}",
            b"{FILE/8}{file/0009}",
        ];
        assert_eq!(file_ids(args), vec!["12", "3", "7", "0009"]);
    }

    #[test]
    fn substitutes_every_occurrence() {
        let paths = HashMap::from([
            ("12".to_owned(), PathBuf::from("/tmp/w/files/12")),
            ("3".to_owned(), PathBuf::from("/tmp/w/files/3")),
        ]);
        assert_eq!(
            substitute(b"a{file/12}b{file/12}{file/3}{file/4}c", &paths),
            b"a/tmp/w/files/12b/tmp/w/files/12/tmp/w/files/3{file/4}c"
        );
        assert_eq!(substitute(b"{file/}", &paths), b"{file/}");
        assert_eq!(substitute(b"", &paths), b"");
        assert_eq!(substitute(b"{file/12}", &paths), b"/tmp/w/files/12");
    }
}
