//! Which URL holds a DID's document: the method rules for `did:plc` and
//! `did:web` as atproto restricts them. Pure: no IO.

use barn_repo::syntax::{Did, Handle};

use crate::error::{Error, Result};

/// Length of a did:plc identifier: 15 bytes of SHA-256 in base32 (RFC 4648
/// lower case, no padding) is 24 characters.
const PLC_IDENT_LEN: usize = 24;

/// The DID methods atproto uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `did:plc`, resolved through the PLC directory.
    Plc,
    /// `did:web`, resolved from the host's `/.well-known/did.json`.
    Web,
}

impl Method {
    /// The method name, also the `method` metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Plc => "plc",
            Method::Web => "web",
        }
    }
}

/// Checks `did` and returns its method and the URL of its document.
///
/// `plc_url` must have no trailing slash. Only hostname-level `did:web` is
/// accepted (atproto does not support path-based ones); a port (`%3A`) and
/// plain `http` are accepted only for `localhost` / `127.0.0.1`, and only
/// when `allow_http_localhost` is set, as the spec reserves both for
/// testing.
pub fn document_url(
    did: &str,
    plc_url: &str,
    allow_http_localhost: bool,
) -> Result<(Method, String)> {
    let parsed: Did =
        did.parse()
            .map_err(|e: barn_repo::syntax::SyntaxError| Error::InvalidDid {
                did: did.to_owned(),
                reason: e.reason.to_owned(),
            })?;
    if parsed.is_plc() {
        check_plc(did, parsed.identifier())?;
        Ok((Method::Plc, format!("{plc_url}/{did}")))
    } else if parsed.is_web() {
        let authority = web_authority(did, parsed.identifier(), allow_http_localhost)?;
        let scheme = if authority.local { "http" } else { "https" };
        Ok((
            Method::Web,
            format!("{scheme}://{}/.well-known/did.json", authority.host_port),
        ))
    } else {
        Err(Error::UnsupportedMethod {
            did: did.to_owned(),
        })
    }
}

/// A did:plc identifier is exactly 24 characters of lower-case base32.
/// Checked here so that nothing odd is ever appended to the directory URL.
fn check_plc(did: &str, ident: &str) -> Result<()> {
    let ok = ident.len() == PLC_IDENT_LEN
        && ident
            .bytes()
            .all(|c| c.is_ascii_lowercase() || (b'2'..=b'7').contains(&c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidDid {
            did: did.to_owned(),
            reason: "did:plc identifier must be 24 characters of base32 (a-z, 2-7)".into(),
        })
    }
}

struct WebAuthority {
    /// `host` or `host:port`, ready for a URL.
    host_port: String,
    /// Loopback, fetched over plain http.
    local: bool,
}

fn web_authority(did: &str, ident: &str, allow_http_localhost: bool) -> Result<WebAuthority> {
    let unsupported = |reason| Error::UnsupportedDidWeb {
        did: did.to_owned(),
        reason,
    };
    // In did:web a literal ':' separates path segments; the port separator
    // is percent-encoded. atproto only supports the hostname form.
    if ident.contains(':') {
        return Err(unsupported(
            "path-based did:web is not supported in atproto",
        ));
    }
    // The only percent-escape a hostname-level did:web can need is the
    // port separator; anything else is not a hostname.
    let (host, port) = match split_port(ident) {
        Some((host, port)) => (host, Some(port)),
        None => (ident, None),
    };
    if host.contains('%') {
        return Err(unsupported(
            "percent-encoding other than the port separator",
        ));
    }
    let local = host.eq_ignore_ascii_case("localhost") || host == "127.0.0.1";
    if local {
        if !allow_http_localhost {
            return Err(unsupported("localhost is only allowed in testing"));
        }
    } else {
        if port.is_some() {
            return Err(unsupported("a port is only allowed on localhost"));
        }
        let handle: Handle = host
            .parse()
            .map_err(|_| unsupported("not a valid hostname"))?;
        if handle.is_disallowed_tld() {
            return Err(unsupported("reserved top-level domain"));
        }
    }
    let host_port = match port {
        Some(port) => {
            let port: u16 = port
                .parse()
                .ok()
                .filter(|p| *p != 0 && !port.starts_with('+'))
                .ok_or_else(|| unsupported("bad port"))?;
            format!("{host}:{port}")
        }
        None => host.to_owned(),
    };
    Ok(WebAuthority { host_port, local })
}

/// Splits `host%3Aport` (either case of the hex digit) at the escape.
fn split_port(ident: &str) -> Option<(&str, &str)> {
    let at = ident.find("%3A").or_else(|| ident.find("%3a"))?;
    Some((&ident[..at], &ident[at + 3..]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const PLC: &str = "https://plc.directory";

    fn url(did: &str, local: bool) -> Result<(Method, String)> {
        document_url(did, PLC, local)
    }

    #[test]
    fn plc_goes_to_the_directory() {
        assert_eq!(
            url("did:plc:ewvi7nxzyoun6zhxrhs64oiz", false).unwrap(),
            (
                Method::Plc,
                "https://plc.directory/did:plc:ewvi7nxzyoun6zhxrhs64oiz".into()
            )
        );
        for bad in [
            "did:plc:ewvi7nxzyoun6zhxrhs64oi",
            "did:plc:ewvi7nxzyoun6zhxrhs64oizz",
            "did:plc:EWVI7NXZYOUN6ZHXRHS64OIZ",
            "did:plc:ewvi7nxzyoun6zhxrhs64oi1",
            "did:plc:ewvi7nxzyoun6zhxrhs64o%2F",
        ] {
            assert_eq!(
                url(bad, false).unwrap_err().reason(),
                "invalid_did",
                "{bad}"
            );
        }
    }

    #[test]
    fn hostname_web_goes_to_well_known_over_https() {
        assert_eq!(
            url("did:web:example.com", false).unwrap(),
            (
                Method::Web,
                "https://example.com/.well-known/did.json".into()
            )
        );
        // allow_http_localhost changes nothing for real hosts.
        assert_eq!(
            url("did:web:pds.example.com", true).unwrap().1,
            "https://pds.example.com/.well-known/did.json"
        );
    }

    #[test]
    fn path_did_web_is_rejected() {
        for did in [
            "did:web:example.com:user:alice",
            "did:web:localhost%3A1234:u",
        ] {
            let err = url(did, true).unwrap_err();
            assert_eq!(err.reason(), "unsupported_did_web", "{did}");
            assert!(err.to_string().contains("path-based"), "{err}");
        }
    }

    #[test]
    fn localhost_needs_the_testing_switch() {
        assert_eq!(
            url("did:web:localhost%3A2583", true).unwrap().1,
            "http://localhost:2583/.well-known/did.json"
        );
        assert_eq!(
            url("did:web:127.0.0.1%3a80", true).unwrap().1,
            "http://127.0.0.1:80/.well-known/did.json"
        );
        assert_eq!(
            url("did:web:localhost", true).unwrap().1,
            "http://localhost/.well-known/did.json"
        );
        for did in [
            "did:web:localhost%3A2583",
            "did:web:localhost",
            "did:web:127.0.0.1",
        ] {
            assert_eq!(
                url(did, false).unwrap_err().reason(),
                "unsupported_did_web",
                "{did}"
            );
        }
    }

    #[test]
    fn bad_hosts_and_ports_are_rejected() {
        for did in [
            "did:web:example.com%3A8443",
            "did:web:localhost%3A0",
            "did:web:localhost%3A65536",
            "did:web:localhost%3A",
            "did:web:localhost%3A%2B1",
            "did:web:exa%2Dmple.com",
            "did:web:com",
            "did:web:example.arpa",
            "did:web:foo.localhost",
            "did:web:10.0.0.1",
            "did:web:-bad-.com",
        ] {
            assert_eq!(
                url(did, true).unwrap_err().reason(),
                "unsupported_did_web",
                "{did}"
            );
        }
    }

    #[test]
    fn other_methods_and_bad_syntax() {
        assert_eq!(
            url(
                "did:key:zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribSF",
                false
            )
            .unwrap_err()
            .reason(),
            "unsupported_method"
        );
        for bad in [
            "",
            "did:web:",
            "did:web:example.com/x",
            "DID:web:example.com",
            "did:web:example.com#frag",
        ] {
            assert_eq!(
                url(bad, false).unwrap_err().reason(),
                "invalid_did",
                "{bad:?}"
            );
        }
    }
}
