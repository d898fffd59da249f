//! XRPC query parameters, checked against the lexicon's formats. Every
//! problem is an `InvalidRequest` that names the parameter.

use barn_repo::Cid;
use barn_repo::syntax::{AtIdentifier, Datetime, Did, Nsid, RecordKey, Tid};

use crate::error::XrpcError;

/// The parameters of one request.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses a raw query string (`a=1&b=2`, percent-encoded).
    pub fn parse(query: Option<&str>) -> Params {
        Params {
            pairs: form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        }
    }

    /// The value of `name`, if given once; an error if given twice (the
    /// lexicon's scalars are single-valued).
    pub fn opt(&self, name: &str) -> Result<Option<&str>, XrpcError> {
        let mut found = self.pairs.iter().filter(|(k, _)| k == name);
        let first = found.next();
        if found.next().is_some() {
            return Err(XrpcError::invalid(format!("{name}: given more than once")));
        }
        Ok(first.map(|(_, v)| v.as_str()))
    }

    /// The value of `name`, required.
    pub fn required(&self, name: &str) -> Result<&str, XrpcError> {
        self.opt(name)?
            .ok_or_else(|| XrpcError::invalid(format!("{name}: required")))
    }

    /// A required DID.
    pub fn did(&self, name: &str) -> Result<String, XrpcError> {
        let v = self.required(name)?;
        Did::validate(v).map_err(|e| XrpcError::invalid(format!("{name}: not a DID: {e}")))?;
        Ok(v.to_owned())
    }

    /// A required DID or handle.
    pub fn at_identifier(&self, name: &str) -> Result<String, XrpcError> {
        let v = self.required(name)?;
        AtIdentifier::validate(v)
            .map_err(|e| XrpcError::invalid(format!("{name}: not a DID or handle: {e}")))?;
        Ok(v.to_owned())
    }

    /// A required NSID.
    pub fn nsid(&self, name: &str) -> Result<String, XrpcError> {
        let v = self.required(name)?;
        Nsid::validate(v).map_err(|e| XrpcError::invalid(format!("{name}: not an NSID: {e}")))?;
        Ok(v.to_owned())
    }

    /// A required record key.
    pub fn rkey(&self, name: &str) -> Result<String, XrpcError> {
        let v = self.required(name)?;
        RecordKey::validate(v)
            .map_err(|e| XrpcError::invalid(format!("{name}: not a record key: {e}")))?;
        Ok(v.to_owned())
    }

    /// An optional TID (a rev).
    pub fn tid(&self, name: &str) -> Result<Option<String>, XrpcError> {
        match self.opt(name)? {
            None => Ok(None),
            Some(v) => {
                Tid::validate(v)
                    .map_err(|e| XrpcError::invalid(format!("{name}: not a TID: {e}")))?;
                Ok(Some(v.to_owned()))
            }
        }
    }

    /// An optional datetime, as microseconds since the Unix epoch.
    pub fn datetime_micros(&self, name: &str) -> Result<Option<i64>, XrpcError> {
        match self.opt(name)? {
            None => Ok(None),
            Some(v) => Datetime::parse(v)
                .map(|d| Some(d.timestamp_micros()))
                .map_err(|e| XrpcError::invalid(format!("{name}: not a datetime: {e}"))),
        }
    }

    /// A CID (required when `required`).
    pub fn cid(&self, name: &str) -> Result<Option<Cid>, XrpcError> {
        match self.opt(name)? {
            None => Ok(None),
            Some(v) => v
                .parse::<Cid>()
                .map(Some)
                .map_err(|e| XrpcError::invalid(format!("{name}: not a CID: {e}"))),
        }
    }

    /// An integer limit in `1..=max`, `default` when absent.
    pub fn limit(&self, name: &str, default: usize, max: usize) -> Result<usize, XrpcError> {
        match self.opt(name)? {
            None => Ok(default),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n >= 1 && n as u64 <= max as u64 => Ok(n as usize),
                Ok(n) => Err(XrpcError::invalid(format!(
                    "{name}: {n} is out of range (1 to {max})"
                ))),
                Err(_) => Err(XrpcError::invalid(format!("{name}: not an integer: {v:?}"))),
            },
        }
    }

    /// A boolean, `false` when absent.
    pub fn flag(&self, name: &str) -> Result<bool, XrpcError> {
        match self.opt(name)? {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(v) => Err(XrpcError::invalid(format!(
                "{name}: not a boolean (true or false): {v:?}"
            ))),
        }
    }

    /// An opaque cursor, bounded in length (cursors barn hands out are
    /// short; a long one is not barn's).
    pub fn cursor(&self) -> Result<Option<&str>, XrpcError> {
        match self.opt("cursor")? {
            Some(c) if c.len() > 512 => Err(XrpcError::invalid("cursor: too long")),
            other => Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn formats_are_checked_and_named_in_the_message() {
        let p = Params::parse(Some(
            "did=did%3Aplc%3Aabc&limit=0&rev=nope&did2=x&reverse=yes",
        ));
        assert_eq!(p.did("did").unwrap(), "did:plc:abc");
        let e = p.did("did2").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.message.starts_with("did2:"), "{}", e.message);
        assert!(p.limit("limit", 10, 100).is_err());
        assert!(p.tid("rev").is_err());
        assert!(p.flag("reverse").is_err());
        assert!(
            p.required("missing")
                .unwrap_err()
                .message
                .contains("required")
        );
    }

    #[test]
    fn huge_and_repeated_values_are_rejected() {
        let p = Params::parse(Some("limit=99999999999999999999999&a=1&a=2"));
        assert!(p.limit("limit", 10, 1000).is_err());
        assert!(p.opt("a").is_err());
        let p = Params::parse(Some("limit=1000"));
        assert_eq!(p.limit("limit", 10, 1000).unwrap(), 1000);
    }
}
