//! The raw commit object: which bytes a signature covers, the signature itself,
//! and the committer time, split exactly as git splits them.

/// Header carrying the signature of a commit in a SHA-1 repository.
pub const SIGNATURE_HEADER: &[u8] = b"gpgsig";

/// A commit object cut into what was signed and the signature over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The commit without its signature headers: the bytes the signer signed.
    pub payload: Vec<u8>,
    /// The armored signature (continuation lines joined, leading space removed),
    /// or `None` for an unsigned commit.
    pub signature: Option<Vec<u8>>,
    /// How many `gpgsig` headers the object has (git would join several; we refuse).
    pub signature_headers: usize,
}

/// Cuts `raw` (the object as `git cat-file commit` prints it) into payload and
/// signature.
///
/// This follows git's `parse_buffer_signed_by_header` for a SHA-1 repository:
/// the `gpgsig` header and its continuation lines (each starting with a space)
/// become the signature; any other header starting with `gpgsig` (such as
/// `gpgsig-sha256`, the signature of the SHA-256 form of the object) and its
/// continuation lines are left out of the payload; everything else, including
/// the blank line and the whole message after it, is the payload, byte for byte.
pub fn split(raw: &[u8]) -> Split {
    let mut payload = Vec::with_capacity(raw.len());
    let mut signature: Vec<u8> = Vec::new();
    let mut signature_headers = 0;
    let mut in_signature = false;
    let mut other_signature = false;
    let mut rest = raw;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let line = &rest[..end];
        let mut sig_part: Option<&[u8]> = None;
        if in_signature && line.first() == Some(&b' ') {
            sig_part = Some(&line[1..]);
        } else if line.starts_with(SIGNATURE_HEADER)
            && line.get(SIGNATURE_HEADER.len()) == Some(&b' ')
        {
            sig_part = Some(&line[SIGNATURE_HEADER.len() + 1..]);
            signature_headers += 1;
            other_signature = false;
        } else if line.starts_with(SIGNATURE_HEADER) {
            other_signature = true;
        } else if other_signature && line.first() != Some(&b' ') {
            other_signature = false;
        }
        match sig_part {
            Some(part) => {
                signature.extend_from_slice(part);
                in_signature = true;
                rest = &rest[end..];
            }
            None => {
                in_signature = false;
                if line == b"\n" {
                    // End of the headers: the message is copied as it is.
                    payload.extend_from_slice(rest);
                    break;
                }
                if !other_signature {
                    payload.extend_from_slice(line);
                }
                rest = &rest[end..];
            }
        }
    }
    Split {
        payload,
        signature: (signature_headers > 0).then_some(signature),
        signature_headers,
    }
}

/// The committer time of a commit object, in seconds since the Unix epoch, or
/// `None` when the object has no readable `committer` header.
pub fn committer_time(raw: &[u8]) -> Option<i64> {
    for line in raw.split(|&b| b == b'\n') {
        if line.is_empty() {
            // The headers end at the first blank line.
            return None;
        }
        if let Some(ident) = line.strip_prefix(b"committer ") {
            return time_of_ident(ident);
        }
    }
    None
}

/// `Name <email> 1700000000 +0100` -> 1700000000. The time follows the last `>`.
fn time_of_ident(ident: &[u8]) -> Option<i64> {
    let after = ident.iter().rposition(|&b| b == b'>')?;
    let tail = std::str::from_utf8(&ident[after + 1..]).ok()?;
    let mut fields = tail.split_ascii_whitespace();
    let secs = fields.next()?;
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    secs.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNED: &[u8] = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\
author A U Thor <a@example.test> 1700000000 +0000\n\
committer C O Mitter <c@example.test> 1700000100 +0200\n\
gpgsig -----BEGIN SSH SIGNATURE-----\n \
U1NIU0lH\n \
-----END SSH SIGNATURE-----\n\
\n\
subject\n\
\n\
body line\n gpgsig not a header here\n";

    #[test]
    fn split_removes_the_signature_header_and_its_continuation_lines() {
        let s = split(SIGNED);
        assert_eq!(
            s.payload,
            b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\
author A U Thor <a@example.test> 1700000000 +0000\n\
committer C O Mitter <c@example.test> 1700000100 +0200\n\
\n\
subject\n\
\n\
body line\n gpgsig not a header here\n"
        );
        assert_eq!(
            s.signature.as_deref(),
            Some(&b"-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n"[..])
        );
        assert_eq!(s.signature_headers, 1);
    }

    #[test]
    fn split_leaves_out_gpgsig_sha256_and_keeps_other_multiline_headers() {
        let raw = b"tree t\n\
parent p\n\
author a <a> 1 +0000\n\
committer c <c> 2 +0000\n\
mergetag object x\n type commit\n\
gpgsig-sha256 -----BEGIN PGP SIGNATURE-----\n abc\n -----END PGP SIGNATURE-----\n\
gpgsig -----BEGIN PGP SIGNATURE-----\n def\n -----END PGP SIGNATURE-----\n\
encoding UTF-8\n\
\n\
msg\n";
        let s = split(raw);
        assert_eq!(
            s.payload,
            b"tree t\nparent p\nauthor a <a> 1 +0000\ncommitter c <c> 2 +0000\n\
mergetag object x\n type commit\nencoding UTF-8\n\nmsg\n"
        );
        assert_eq!(
            s.signature.as_deref(),
            Some(&b"-----BEGIN PGP SIGNATURE-----\ndef\n-----END PGP SIGNATURE-----\n"[..])
        );
    }

    #[test]
    fn split_of_an_unsigned_commit_is_the_whole_object() {
        let raw = b"tree t\nauthor a <a> 1 +0000\ncommitter c <c> 2 +0000\n\nmsg\n";
        let s = split(raw);
        assert_eq!(s.payload, raw);
        assert_eq!(s.signature, None);
        assert_eq!(s.signature_headers, 0);
    }

    #[test]
    fn split_counts_repeated_signature_headers() {
        let raw = b"tree t\ngpgsig one\ngpgsig two\n\nmsg\n";
        let s = split(raw);
        assert_eq!(s.signature_headers, 2);
        assert_eq!(s.payload, b"tree t\n\nmsg\n");
    }

    #[test]
    fn split_of_a_message_only_mentioning_gpgsig_keeps_it() {
        let raw = b"tree t\n\ngpgsig in the message\n";
        let s = split(raw);
        assert_eq!(s.signature, None);
        assert_eq!(s.payload, raw);
    }

    #[test]
    fn split_without_trailing_newline_or_message_keeps_every_byte() {
        let raw = b"tree t\ncommitter c <c> 2 +0000";
        assert_eq!(split(raw).payload, raw);
        assert_eq!(split(b"").payload, b"");
    }

    #[test]
    fn committer_time_reads_the_committer_header_only() {
        assert_eq!(committer_time(SIGNED), Some(1_700_000_100));
        assert_eq!(
            committer_time(b"tree t\ncommitter Odd > Name <c> 42 -0500\n\n"),
            Some(42)
        );
        assert_eq!(committer_time(b"tree t\nauthor a <a> 1 +0000\n\n"), None);
        assert_eq!(
            committer_time(b"tree t\n\ncommitter c <c> 5 +0000\n"),
            None,
            "a committer line in the message is not the header"
        );
        assert_eq!(
            committer_time(b"tree t\ncommitter c <c> soon +0000\n\n"),
            None
        );
        assert_eq!(committer_time(b"tree t\ncommitter c <c>\n\n"), None);
    }
}
