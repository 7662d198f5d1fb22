//! JSON with comments, for files people write by hand: `//` line comments and `/* */`
//! block comments outside strings are blanked out (newlines kept), so the JSON parser's line
//! and column numbers still point into the file as written.

/// The text with every comment replaced by spaces; `Err((line, column))` for a block
/// comment that never ends.
pub fn strip_comments(text: &str) -> Result<String, (usize, usize)> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let mut in_string = false;
    let (mut line, mut col) = (1, 1);
    let advance = |b: u8, line: &mut usize, col: &mut usize| {
        if b == b'\n' {
            *line += 1;
            *col = 1;
        } else {
            *col += 1;
        }
    };
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            out.push(b);
            if b == b'\\' && i + 1 < bytes.len() {
                out.push(bytes[i + 1]);
                advance(b, &mut line, &mut col);
                advance(bytes[i + 1], &mut line, &mut col);
                i += 2;
                continue;
            }
            if b == b'"' {
                in_string = false;
            }
            advance(b, &mut line, &mut col);
            i += 1;
            continue;
        }
        match (b, bytes.get(i + 1)) {
            (b'"', _) => {
                in_string = true;
                out.push(b);
            }
            (b'/', Some(b'/')) => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    out.push(b' ');
                    advance(bytes[i], &mut line, &mut col);
                    i += 1;
                }
                continue;
            }
            (b'/', Some(b'*')) => {
                let start = (line, col);
                let mut j = i + 2;
                while j + 1 < bytes.len() && !(bytes[j] == b'*' && bytes[j + 1] == b'/') {
                    j += 1;
                }
                if j + 1 >= bytes.len() {
                    return Err(start);
                }
                for &c in &bytes[i..j + 2] {
                    out.push(if c == b'\n' { b'\n' } else { b' ' });
                    advance(c, &mut line, &mut col);
                }
                i = j + 2;
                continue;
            }
            _ => out.push(b),
        }
        advance(b, &mut line, &mut col);
        i += 1;
    }
    // Only ASCII bytes were replaced (by ASCII spaces), so the text is still UTF-8.
    Ok(String::from_utf8(out).expect("comments blanked byte for byte"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_go_strings_stay_positions_hold() {
        let text = "{\n  // a comment \"with quotes\"\n  \"url\": \"http://x/*y*/\", /* block\n spanning */ \"n\": 1 // end\n}";
        let stripped = strip_comments(text).unwrap();
        let v: serde_json::Value = serde_json::from_str(&stripped).unwrap();
        assert_eq!(v["url"], "http://x/*y*/");
        assert_eq!(v["n"], 1);
        assert_eq!(stripped.lines().count(), text.lines().count());
        assert_eq!(stripped.len(), text.len());
        // An escaped quote does not end the string.
        let s = strip_comments(r#"{"a": "x\"//not a comment"}"#).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&s).unwrap()["a"],
            "x\"//not a comment"
        );
    }

    #[test]
    fn unterminated_block_comment_reports_where_it_starts() {
        assert_eq!(strip_comments("{\n  /* open\n}"), Err((2, 3)));
    }
}
