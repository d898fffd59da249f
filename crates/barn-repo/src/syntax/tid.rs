//! Timestamp identifiers: sortable 64-bit ids used as record keys and
//! repository revisions.

use super::{SyntaxError, SyntaxKind, string_newtype};

/// Number of base32 characters in a TID (13 * 5 bits covers 64 bits).
const LEN: usize = 13;
/// The base32-sortable alphabet; it is in ASCII order, which is what makes
/// string order and numeric order agree.
const ALPHABET: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";
/// Timestamps are 53 bits, the integer range a JavaScript number holds
/// exactly.
const TIMESTAMP_BITS: u32 = 53;
const CLOCK_ID_BITS: u32 = 10;
const TIMESTAMP_MAX: u64 = (1 << TIMESTAMP_BITS) - 1;
const CLOCK_ID_MAX: u16 = (1 << CLOCK_ID_BITS) - 1;

const fn err(reason: &'static str) -> SyntaxError {
    SyntaxError::new(SyntaxKind::Tid, reason)
}

/// A syntactically valid TID such as `3jzfcijpj2z2a`.
///
/// The layout of the 64-bit value is: one reserved top bit (zero when
/// generated per spec), 53 bits of microseconds since the unix epoch, then
/// 10 bits of clock id. The derived ordering on the string matches the
/// ordering of [`Tid::as_u64`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tid(String);

string_newtype!(Tid, Tid::validate);

impl Tid {
    /// Checks `s` against the TID syntax without allocating.
    ///
    /// The first character is limited to the first 16 alphabet entries, which
    /// is the spec's rule: it keeps the value within 64 bits. A TID whose
    /// reserved top bit is set (first char `c`..`j`) is accepted, as the spec
    /// syntax and the reference implementations do.
    pub fn validate(s: &str) -> Result<(), SyntaxError> {
        let b = s.as_bytes();
        if b.len() != LEN {
            return Err(err("must be 13 chars"));
        }
        if !b.iter().all(|&c| decode_char(c).is_some()) {
            return Err(err("only lowercase base32-sortable chars are allowed"));
        }
        if b.first()
            .and_then(|&c| decode_char(c))
            .is_none_or(|v| v >= 16)
        {
            return Err(err("first char must be one of 234567abcdefghij"));
        }
        Ok(())
    }

    /// Builds a TID from a timestamp in microseconds since the unix epoch and
    /// a 10-bit clock id.
    ///
    /// Fails if the timestamp does not fit in 53 bits or the clock id in
    /// 10 bits, rather than silently truncating either.
    pub fn from_parts(timestamp_micros: u64, clock_id: u16) -> Result<Tid, SyntaxError> {
        if timestamp_micros > TIMESTAMP_MAX {
            return Err(err("timestamp does not fit in 53 bits"));
        }
        if clock_id > CLOCK_ID_MAX {
            return Err(err("clock id does not fit in 10 bits"));
        }
        Ok(Tid::from_u64(
            (timestamp_micros << CLOCK_ID_BITS) | u64::from(clock_id),
        ))
    }

    /// Encodes any 64-bit value; every value has a valid 13-char encoding.
    pub fn from_u64(value: u64) -> Tid {
        let mut out = [0u8; LEN];
        let mut v = value;
        for slot in out.iter_mut().rev() {
            // Index is masked to 0..32, so the conversion cannot truncate.
            *slot = ALPHABET[(v & 31) as usize];
            v >>= 5;
        }
        Tid(out.iter().map(|&c| char::from(c)).collect())
    }

    /// The 64-bit value this TID encodes.
    pub fn as_u64(&self) -> u64 {
        self.0.bytes().fold(0u64, |acc, c| {
            (acc << 5) | u64::from(decode_char(c).unwrap_or(0))
        })
    }

    /// Microseconds since the unix epoch (the 53 timestamp bits; the reserved
    /// top bit is not part of it).
    pub fn timestamp_micros(&self) -> u64 {
        (self.as_u64() >> CLOCK_ID_BITS) & TIMESTAMP_MAX
    }

    /// The 10-bit clock id that disambiguates TIDs made in the same
    /// microsecond.
    pub fn clock_id(&self) -> u16 {
        // Masked to 10 bits, so the conversion cannot truncate.
        (self.as_u64() & u64::from(CLOCK_ID_MAX)) as u16
    }
}

impl From<u64> for Tid {
    fn from(value: u64) -> Tid {
        Tid::from_u64(value)
    }
}

impl From<&Tid> for u64 {
    fn from(tid: &Tid) -> u64 {
        tid.as_u64()
    }
}

impl From<Tid> for u64 {
    fn from(tid: Tid) -> u64 {
        tid.as_u64()
    }
}

/// Position of `c` in [`ALPHABET`], if it is in it.
const fn decode_char(c: u8) -> Option<u8> {
    match c {
        b'2'..=b'7' => Some(c - b'2'),
        b'a'..=b'z' => Some(c - b'a' + 6),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_matches_decoder() {
        for (i, &c) in ALPHABET.iter().enumerate() {
            assert_eq!(decode_char(c), Some(i as u8));
        }
        assert!(ALPHABET.is_sorted(), "alphabet must be in ascii order");
    }

    #[test]
    fn known_value() {
        // 2222222222222 is zero, 2222222222223 is one.
        assert_eq!(Tid::from_u64(0).as_str(), "2222222222222");
        assert_eq!(Tid::from_u64(1).as_str(), "2222222222223");
        assert_eq!(Tid::from_u64(32).as_str(), "2222222222232");
        assert_eq!(Tid::from_u64(u64::MAX).as_str(), "jzzzzzzzzzzzz");
        // The first char carries the top 4 bits; 'b' is the largest with the
        // spec's top bit clear.
        assert_eq!(Tid::from_u64(u64::MAX >> 1).as_str(), "bzzzzzzzzzzzz");
        assert_eq!(Tid::from_u64(1 << 63).as_str(), "c222222222222");
        assert!(Tid::validate(Tid::from_u64(u64::MAX).as_str()).is_ok());
    }

    #[test]
    fn parts_round_trip() {
        let cases = [
            (0u64, 0u16),
            (1, 1),
            (1_700_000_000_000_000, 0),
            (1_700_000_000_000_000, 1023),
            (TIMESTAMP_MAX, CLOCK_ID_MAX),
            (TIMESTAMP_MAX, 0),
        ];
        for (ts, clock) in cases {
            let tid = Tid::from_parts(ts, clock).unwrap();
            assert_eq!(tid.timestamp_micros(), ts);
            assert_eq!(tid.clock_id(), clock);
            let reparsed: Tid = tid.as_str().parse().unwrap();
            assert_eq!(reparsed, tid);
            assert_eq!(Tid::from(u64::from(&tid)), tid);
        }
        // The spec's top bit stays clear for any in-range parts.
        let max = Tid::from_parts(TIMESTAMP_MAX, CLOCK_ID_MAX).unwrap();
        assert_eq!(max.as_u64() >> 63, 0);
        assert_eq!(max.as_str(), "bzzzzzzzzzzzz");
    }

    #[test]
    fn parts_out_of_range_are_rejected() {
        assert!(Tid::from_parts(TIMESTAMP_MAX + 1, 0).is_err());
        assert!(Tid::from_parts(0, CLOCK_ID_MAX + 1).is_err());
        assert!(Tid::from_parts(u64::MAX, u16::MAX).is_err());
    }

    #[test]
    fn vector_value_decodes() {
        let tid: Tid = "3jzfcijpj2z2a".parse().unwrap();
        assert_eq!(Tid::from_u64(tid.as_u64()), tid);
        // Seconds since the epoch for this TID fall in 2022-2023.
        let secs = tid.timestamp_micros() / 1_000_000;
        assert!((1_640_995_200..1_704_067_200).contains(&secs), "{secs}");
    }

    #[test]
    fn string_order_matches_numeric_order() {
        // A deterministic spread: small values, values around every 5-bit
        // boundary and a pseudo-random walk across the whole range.
        let mut values: Vec<u64> = (0..64).collect();
        for shift in 0..64 {
            let p = 1u64 << shift;
            values.extend([p - 1, p, p + 1]);
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(x);
            values.push(x >> 1);
        }
        let tids: Vec<Tid> = values.iter().map(|&v| Tid::from_u64(v)).collect();
        for (a, ta) in values.iter().zip(&tids) {
            assert_eq!(ta.as_u64(), *a);
        }
        for w in values.windows(2).zip(tids.windows(2)) {
            let ([a, b], [ta, tb]) = w else {
                unreachable!()
            };
            assert_eq!(a.cmp(b), ta.cmp(tb), "{a} vs {b}: {ta} vs {tb}");
            assert_eq!(a.cmp(b), ta.as_str().cmp(tb.as_str()));
        }
        let mut sorted_by_str = tids.clone();
        sorted_by_str.sort();
        let mut sorted_values = values.clone();
        sorted_values.sort_unstable();
        let decoded: Vec<u64> = sorted_by_str.iter().map(Tid::as_u64).collect();
        assert_eq!(decoded, sorted_values);
    }

    #[test]
    fn rejects_edge_cases() {
        for bad in [
            "",
            "2222222222222 ",
            " 2222222222222",
            "222222222222\n",
            "k222222222222",
        ] {
            assert!(Tid::validate(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
