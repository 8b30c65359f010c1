//! Incremental UTF-8 validation for text messages that arrive in pieces.
//!
//! Owns the rule "fail as soon as an invalid sequence is seen": bytes are
//! validated as they arrive (part of a frame, or frame after frame), and only
//! an incomplete code point at the very end of the input is held back, at
//! most 3 bytes. Validation itself is `simdutf8`'s.

/// Why a piece of text was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidUtf8;

/// Validates UTF-8 fed in arbitrary chunks.
#[derive(Debug, Default, Clone)]
pub(crate) struct Utf8Validator {
    partial: [u8; 4],
    partial_len: u8,
}

impl Utf8Validator {
    /// Feed the next chunk. Errors as soon as the bytes seen so far cannot be
    /// the start of valid UTF-8.
    pub(crate) fn feed(&mut self, mut data: &[u8]) -> Result<(), InvalidUtf8> {
        // Complete a code point left over from the previous chunk.
        while self.partial_len > 0 {
            let len = usize::from(self.partial_len);
            let Some((&b, rest)) = data.split_first() else {
                return Ok(());
            };
            self.partial[len] = b;
            self.partial_len += 1;
            data = rest;
            match simdutf8::compat::from_utf8(&self.partial[..len + 1]) {
                Ok(_) => self.partial_len = 0,
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                Err(_) if self.partial_len == 4 => return Err(InvalidUtf8),
                Err(_) => {}
            }
        }
        if simdutf8::basic::from_utf8(data).is_ok() {
            return Ok(());
        }
        match simdutf8::compat::from_utf8(data) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                let tail = &data[e.valid_up_to()..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// The end of the text: an incomplete code point is an error.
    pub(crate) fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let incomplete = self.partial_len != 0;
        self.partial_len = 0;
        if incomplete {
            Err(InvalidUtf8)
        } else {
            Ok(())
        }
    }

    /// Forget any partial state (a new message starts).
    pub(crate) fn reset(&mut self) {
        self.partial_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunked(data: &[u8], sizes: &[usize]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::default();
        let mut rest = data;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].clamp(1, rest.len());
            v.feed(&rest[..n])?;
            rest = &rest[n..];
            i += 1;
        }
        v.finish()
    }

    #[test]
    fn valid_multibyte_split_at_every_point() {
        let s = "κόσμε € 𝄞 ok".as_bytes();
        for cut in 0..=s.len() {
            let mut v = Utf8Validator::default();
            v.feed(&s[..cut]).unwrap();
            v.feed(&s[cut..]).unwrap();
            v.finish().unwrap();
        }
    }

    #[test]
    fn fails_fast_before_the_end() {
        // 0xED 0xA0 is a surrogate start: invalid at once, long before the end.
        let mut v = Utf8Validator::default();
        v.feed(b"abc").unwrap();
        assert_eq!(v.feed(&[0xED, 0xA0]), Err(InvalidUtf8));
        let mut v = Utf8Validator::default();
        v.feed(&[0xF4]).unwrap();
        assert_eq!(v.feed(&[0x90]), Err(InvalidUtf8), "above U+10FFFF");
    }

    #[test]
    fn incomplete_at_end_is_an_error() {
        let mut v = Utf8Validator::default();
        v.feed(&[0xE2, 0x82]).unwrap();
        assert_eq!(v.finish(), Err(InvalidUtf8));
    }

    proptest! {
        #[test]
        fn agrees_with_std(data in proptest::collection::vec(any::<u8>(), 0..64),
                           sizes in proptest::collection::vec(1usize..7, 1..5)) {
            let expected = std::str::from_utf8(&data).is_ok();
            prop_assert_eq!(chunked(&data, &sizes).is_ok(), expected);
        }

        #[test]
        fn valid_strings_pass_in_any_chunking(s in ".{0,40}", sizes in proptest::collection::vec(1usize..5, 1..5)) {
            prop_assert!(chunked(s.as_bytes(), &sizes).is_ok());
        }
    }
}
