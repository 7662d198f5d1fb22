//! Reading one named section of a PE file (a UKI's `.cmdline` or `.osrel`), enough for the
//! bundle builder to check a UKI against its root and for `update status` to name the
//! version a slot's UKI boots.

use std::io::{self, Read, Seek, SeekFrom};

/// Sections larger than this are not a command line or an os-release.
pub const MAX_SECTION_BYTES: usize = 1 << 20;

/// The bytes of section `name` (`.cmdline`, `.osrel`) without file padding; `None` when
/// the file is not PE or has no such section.
pub fn section(f: &mut (impl Read + Seek), name: &str) -> io::Result<Option<Vec<u8>>> {
    let mut dos = [0u8; 64];
    if read_at(f, 0, &mut dos).is_err() || &dos[..2] != b"MZ" {
        return Ok(None);
    }
    let pe = u32::from_le_bytes(dos[0x3c..0x40].try_into().unwrap()) as u64;
    let mut coff = [0u8; 24];
    if read_at(f, pe, &mut coff).is_err() || &coff[..4] != b"PE\0\0" {
        return Ok(None);
    }
    let sections = u16::from_le_bytes([coff[6], coff[7]]) as u64;
    let table = pe + 24 + u16::from_le_bytes([coff[20], coff[21]]) as u64;
    let mut want = [0u8; 8];
    let n = name.len().min(8);
    want[..n].copy_from_slice(&name.as_bytes()[..n]);
    for i in 0..sections.min(96) {
        let mut s = [0u8; 40];
        if read_at(f, table + i * 40, &mut s).is_err() {
            return Ok(None);
        }
        if s[..8] != want {
            continue;
        }
        let word = |o: usize| u32::from_le_bytes(s[o..o + 4].try_into().unwrap());
        // VirtualSize is the content; SizeOfRawData includes the file alignment padding.
        let size = word(8).min(word(16)) as usize;
        if size > MAX_SECTION_BYTES {
            return Ok(None);
        }
        let mut body = vec![0u8; size];
        if read_at(f, word(20) as u64, &mut body).is_err() {
            return Ok(None);
        }
        while body.last() == Some(&0) {
            body.pop();
        }
        return Ok(Some(body));
    }
    Ok(None)
}

fn read_at(f: &mut (impl Read + Seek), at: u64, buf: &mut [u8]) -> io::Result<()> {
    f.seek(SeekFrom::Start(at))?;
    f.read_exact(buf)
}

/// `KEY=value` from an os-release text, with quotes removed.
pub fn os_release_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix('=')?;
        Some(v.trim().trim_matches('"').to_string())
    })
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::io::Cursor;

    /// A minimal PE: MZ, e_lfanew, the PE signature and COFF header, no optional header, and
    /// the given sections.
    pub fn tiny_pe(sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut pe = vec![0u8; 0x400];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
        pe[0x40..0x44].copy_from_slice(b"PE\0\0");
        pe[0x46..0x48].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        for (i, (name, body)) in sections.iter().enumerate() {
            let s = 0x40 + 24 + i * 40;
            let at = pe.len();
            pe[s..s + name.len()].copy_from_slice(name.as_bytes());
            pe[s + 8..s + 12].copy_from_slice(&(body.len() as u32).to_le_bytes());
            let raw = body.len().div_ceil(512) * 512;
            pe[s + 16..s + 20].copy_from_slice(&(raw as u32).to_le_bytes());
            pe[s + 20..s + 24].copy_from_slice(&(at as u32).to_le_bytes());
            pe.extend_from_slice(body);
            pe.resize(at + raw, 0);
        }
        pe
    }

    #[test]
    fn sections_are_found_by_name() {
        let pe = tiny_pe(&[
            (
                ".osrel",
                b"ID=sysctr\nSYSCTR_VERSION=\"1.4.0\"\nSYSCTR_SLOT=b\n",
            ),
            (".cmdline", b"console=ttyS0 ro\0"),
        ]);
        let mut c = Cursor::new(&pe);
        assert_eq!(
            section(&mut c, ".cmdline").unwrap().unwrap(),
            b"console=ttyS0 ro"
        );
        let osrel = String::from_utf8(section(&mut c, ".osrel").unwrap().unwrap()).unwrap();
        assert_eq!(
            os_release_value(&osrel, "SYSCTR_VERSION").as_deref(),
            Some("1.4.0")
        );
        assert_eq!(
            os_release_value(&osrel, "SYSCTR_SLOT").as_deref(),
            Some("b")
        );
        assert_eq!(os_release_value(&osrel, "SYSCTR"), None);
        assert_eq!(section(&mut c, ".linux").unwrap(), None);
        assert_eq!(
            section(&mut Cursor::new(b"not a pe file at all"), ".osrel").unwrap(),
            None
        );
        let mut cut = pe.clone();
        cut.truncate(0x50);
        assert_eq!(section(&mut Cursor::new(&cut), ".osrel").unwrap(), None);
    }
}
