//! A streaming `multipart/form-data` reader: parts are read frame by frame from the request body and
//! a part's data is handed out in chunks as it arrives, so a file of any size passes through in
//! bounded memory.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use memchr::memmem;

use crate::body::ReqBody;
use crate::error::{ApiError, ApiResult};

/// Longest header block of one part.
const MAX_PART_HEADERS: usize = 16 * 1024;
/// Most parts in one request.
const MAX_PARTS: usize = 32;

/// The boundary of a `multipart/form-data` content type.
pub(crate) fn boundary(content_type: Option<&http::HeaderValue>) -> ApiResult<String> {
    let ct = content_type
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unsupported_media_type("send the file as multipart/form-data"))?;
    let mut parts = ct.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    if essence != "multipart/form-data" {
        return Err(ApiError::unsupported_media_type(format!(
            "Unsupported media type \"{essence}\" in request; send multipart/form-data."
        )));
    }
    for p in parts {
        if let Some((k, v)) = p.split_once('=')
            && k.trim().eq_ignore_ascii_case("boundary")
        {
            let b = v.trim().trim_matches('"');
            if b.is_empty() || b.len() > 200 {
                break;
            }
            return Ok(b.to_string());
        }
    }
    Err(ApiError::parse(
        "multipart/form-data without a valid boundary",
    ))
}

/// The headers of one part that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartInfo {
    /// The form field's name.
    pub(crate) name: String,
    /// The file name, for file parts.
    pub(crate) filename: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first delimiter.
    Preamble,
    /// Just after a delimiter: `--` ends the body, CRLF starts a part.
    AfterDelimiter,
    /// In a part's data.
    Data,
    /// After the closing delimiter.
    End,
}

/// Reads parts from a request body.
pub(crate) struct MultipartReader {
    body: ReqBody,
    buf: BytesMut,
    /// `\r\n--boundary`.
    delimiter: Vec<u8>,
    finder: memmem::Finder<'static>,
    state: State,
    body_done: bool,
    parts: usize,
}

impl std::fmt::Debug for MultipartReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultipartReader")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn malformed(why: &str) -> ApiError {
    ApiError::parse(format!("malformed multipart body: {why}"))
}

impl MultipartReader {
    pub(crate) fn new(body: ReqBody, boundary: &str) -> Self {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        let finder = memmem::Finder::new(&delimiter).into_owned();
        // The first delimiter may start the body without a preceding CRLF: pretend there was one.
        let mut buf = BytesMut::with_capacity(64 * 1024);
        buf.extend_from_slice(b"\r\n");
        MultipartReader {
            body,
            buf,
            delimiter,
            finder,
            state: State::Preamble,
            body_done: false,
            parts: 0,
        }
    }

    /// Read one more frame into the buffer; false at the end of the body.
    async fn fill(&mut self) -> ApiResult<bool> {
        if self.body_done {
            return Ok(false);
        }
        loop {
            match self.body.frame().await {
                None => {
                    self.body_done = true;
                    return Ok(false);
                }
                Some(Err(e)) => return Err(crate::body::read_error(&e)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        self.buf.extend_from_slice(&data);
                        return Ok(true);
                    }
                }
            }
        }
    }

    /// Advance to the next part (skipping what is left of the current one); `None` after the last.
    pub(crate) async fn next_part(&mut self) -> ApiResult<Option<PartInfo>> {
        loop {
            match self.state {
                State::End => return Ok(None),
                State::Data => while self.next_chunk().await?.is_some() {},
                State::Preamble => match self.finder.find(&self.buf) {
                    Some(i) => {
                        let _ = self.buf.split_to(i + self.delimiter.len());
                        self.state = State::AfterDelimiter;
                    }
                    None => {
                        // Keep only what may be the start of a delimiter.
                        let keep = self.delimiter.len().min(self.buf.len());
                        let _ = self.buf.split_to(self.buf.len() - keep);
                        if !self.fill().await? {
                            return Err(malformed("no boundary found"));
                        }
                    }
                },
                State::AfterDelimiter => {
                    while self.buf.len() < 2 {
                        if !self.fill().await? {
                            return Err(malformed("the body ends after a boundary"));
                        }
                    }
                    if &self.buf[..2] == b"--" {
                        self.state = State::End;
                        return Ok(None);
                    }
                    // Transport padding (spaces, tabs) may follow the boundary.
                    let info = self.read_headers().await?;
                    self.parts += 1;
                    if self.parts > MAX_PARTS {
                        return Err(malformed("too many parts"));
                    }
                    self.state = State::Data;
                    return Ok(Some(info));
                }
            }
        }
    }

    async fn read_headers(&mut self) -> ApiResult<PartInfo> {
        let end = loop {
            if let Some(i) = memmem::find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.buf.len() > MAX_PART_HEADERS {
                return Err(malformed("part headers too large"));
            }
            if !self.fill().await? {
                return Err(malformed("the body ends inside part headers"));
            }
        };
        let block = self.buf.split_to(end + 4);
        let text =
            std::str::from_utf8(&block).map_err(|_| malformed("part headers are not UTF-8"))?;
        // The block starts with the rest of the boundary line (padding, then CRLF).
        let mut lines = text.split("\r\n");
        let first = lines.next().unwrap_or("");
        if !first.trim_matches([' ', '\t']).is_empty() {
            return Err(malformed("unexpected text after a boundary"));
        }
        let mut name = None;
        let mut filename = None;
        for line in lines.filter(|l| !l.is_empty()) {
            let Some((k, v)) = line.split_once(':') else {
                return Err(malformed("a part header without ':'"));
            };
            if k.trim().eq_ignore_ascii_case("content-disposition") {
                let mut params = v.split(';');
                let kind = params.next().unwrap_or("").trim();
                if !kind.eq_ignore_ascii_case("form-data") {
                    return Err(malformed("a part that is not form-data"));
                }
                for (pk, pv) in disposition_params(v) {
                    match pk.as_str() {
                        "name" => name = Some(pv),
                        "filename" => filename = Some(pv),
                        _ => {}
                    }
                }
            }
        }
        let name = name.ok_or_else(|| malformed("a part without a name"))?;
        Ok(PartInfo { name, filename })
    }

    /// The next chunk of the current part's data; `None` at its end.
    pub(crate) async fn next_chunk(&mut self) -> ApiResult<Option<Bytes>> {
        if self.state != State::Data {
            return Ok(None);
        }
        loop {
            if let Some(i) = self.finder.find(&self.buf) {
                if i > 0 {
                    return Ok(Some(self.buf.split_to(i).freeze()));
                }
                let _ = self.buf.split_to(self.delimiter.len());
                self.state = State::AfterDelimiter;
                return Ok(None);
            }
            // Everything but a possible partial delimiter at the end is data.
            let safe = self.buf.len().saturating_sub(self.delimiter.len() - 1);
            if safe > 0 {
                return Ok(Some(self.buf.split_to(safe).freeze()));
            }
            if !self.fill().await? {
                return Err(malformed("the body ends inside a part"));
            }
        }
    }

    /// A small text field's value, at most `max` bytes.
    pub(crate) async fn read_text(&mut self, field: &str, max: usize) -> ApiResult<String> {
        let mut out = Vec::new();
        while let Some(c) = self.next_chunk().await? {
            if out.len() + c.len() > max {
                return Err(ApiError::invalid(
                    field,
                    format!("{field} is at most {max} bytes"),
                ));
            }
            out.extend_from_slice(&c);
        }
        String::from_utf8(out)
            .map_err(|_| ApiError::invalid(field, format!("{field} is not UTF-8")))
    }

    /// Consume the rest of the body after the closing delimiter (the epilogue is ignored).
    pub(crate) async fn finish(&mut self) -> ApiResult<()> {
        while self.next_part().await?.is_some() {}
        self.buf.clear();
        while self.fill().await? {
            self.buf.clear();
        }
        Ok(())
    }
}

/// `form-data; name="file"; filename="stdout"` → `[("name","file"), ("filename","stdout")]`.
fn disposition_params(v: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = v;
    // Skip the disposition type.
    match rest.find(';') {
        Some(i) => rest = &rest[i + 1..],
        None => return out,
    }
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        if rest.is_empty() {
            break;
        }
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().to_ascii_lowercase();
        rest = &rest[eq + 1..];
        let value;
        if let Some(r) = rest.strip_prefix('"') {
            let mut val = String::new();
            let mut chars = r.char_indices();
            let mut end = r.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            val.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => val.push(c),
                }
            }
            value = val;
            rest = &r[end.min(r.len())..];
        } else {
            let end = rest.find(';').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        out.push((key, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn body_of(chunks: Vec<&'static [u8]>) -> ReqBody {
        let s = futures::stream::iter(chunks.into_iter().map(|c| {
            Ok::<_, crate::body::BoxError>(hyper::body::Frame::data(Bytes::from_static(c)))
        }));
        StreamBody::new(s).boxed_unsync()
    }

    async fn collect(r: &mut MultipartReader) -> Vec<(PartInfo, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(p) = r.next_part().await.unwrap() {
            let mut data = Vec::new();
            while let Some(c) = r.next_chunk().await.unwrap() {
                data.extend_from_slice(&c);
            }
            out.push((p, data));
        }
        out
    }

    #[tokio::test]
    async fn parses_parts_split_anywhere() {
        let whole: &'static [u8] = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\ndns\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"std\\\"out\"\r\nContent-Type: application/octet-stream\r\n\r\nhello\r\n--Xy world\r\n--XyZ--\r\nepilogue";
        for split in 1..whole.len() {
            let (a, b) = whole.split_at(split);
            let mut r = MultipartReader::new(body_of(vec![a, b]), "XyZ");
            let parts = collect(&mut r).await;
            assert_eq!(parts.len(), 2, "split at {split}");
            assert_eq!(parts[0].0.name, "type");
            assert_eq!(parts[0].1, b"dns");
            assert_eq!(parts[1].0.filename.as_deref(), Some("std\"out"));
            assert_eq!(parts[1].1, b"hello\r\n--Xy world");
        }
    }

    #[tokio::test]
    async fn truncated_bodies_are_errors() {
        let mut r = MultipartReader::new(
            body_of(vec![
                b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc",
            ]),
            "b",
        );
        assert!(r.next_part().await.unwrap().is_some());
        let mut err = false;
        loop {
            match r.next_chunk().await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    err = true;
                    break;
                }
            }
        }
        assert!(err);
        let mut r = MultipartReader::new(body_of(vec![b"no boundary here"]), "b");
        assert!(r.next_part().await.is_err());
    }

    #[test]
    fn boundaries() {
        let v = http::HeaderValue::from_static("multipart/form-data; boundary=\"abc\"");
        assert_eq!(boundary(Some(&v)).unwrap(), "abc");
        let v = http::HeaderValue::from_static("application/json");
        assert!(boundary(Some(&v)).is_err());
        assert!(boundary(None).is_err());
    }
}
