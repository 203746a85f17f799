//! Public keys from PEM files, and the algorithms each kind of key allows.
//!
//! The key's type decides its algorithms, so that no flag can pair a key with
//! an algorithm of another family: an RSA key allows RS256/384/512 and
//! PS256/384/512, an EC P-256 key ES256, a P-384 key ES384, an Ed25519 key
//! EdDSA. The DER is read here rather than by jsonwebtoken because
//! jsonwebtoken's PEM reader does not tell P-256 from P-384, and does not
//! measure RSA moduli.

use std::{fmt, path::Path};

use base64::{Engine, engine::general_purpose::STANDARD};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::error::ConfigError;

/// Every RSA algorithm: PKCS#1 v1.5 and PSS, each with three hashes.
pub(crate) const RSA_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// The smallest RSA modulus accepted. Shorter keys are factorable in practice.
const MIN_RSA_BITS: usize = 2048;
/// The largest RSA modulus the RustCrypto verifier behind jsonwebtoken takes.
const MAX_RSA_BITS: usize = 4096;

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// A public key that verifies token signatures, read from PEM, with the
/// algorithms its type allows.
#[derive(Clone)]
pub struct PublicKey {
    /// Where the key came from (a file name), for messages and logs.
    source: String,
    /// What the key is, such as `RSA 2048` or `EC P-256`.
    kind: String,
    pub(crate) key: DecodingKey,
    pub(crate) algorithms: &'static [Algorithm],
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("source", &self.source)
            .field("kind", &self.kind)
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

impl PublicKey {
    /// Reads one PEM public key (`PUBLIC KEY` or `RSA PUBLIC KEY`) from a file.
    pub fn from_pem_file(path: &Path) -> Result<Self, ConfigError> {
        let source = path.display().to_string();
        let pem = std::fs::read(path).map_err(|err| ConfigError::PublicKey {
            source_name: source.clone(),
            reason: format!("cannot read: {err}"),
        })?;
        Self::from_pem(&source, &pem)
    }

    /// Reads one PEM public key; `source` names it in errors and logs.
    pub fn from_pem(source: &str, pem: &[u8]) -> Result<Self, ConfigError> {
        let fail = |reason: String| ConfigError::PublicKey {
            source_name: source.to_owned(),
            reason,
        };
        let (label, der) = pem_block(pem).map_err(|reason| fail(reason.to_owned()))?;
        let parsed = match label.as_str() {
            "PUBLIC KEY" => parse_spki(&der),
            "RSA PUBLIC KEY" => rsa_key(&der),
            label if label.contains("PRIVATE KEY") => Err(format!(
                "is a private key ({label}); give the public key (openssl pkey -pubout)"
            )),
            "CERTIFICATE" => Err(
                "is a certificate; give its public key (openssl x509 -pubkey -noout)".to_owned(),
            ),
            other => Err(format!("unsupported PEM block {other:?}")),
        };
        let (kind, key, algorithms) = parsed.map_err(fail)?;
        Ok(Self {
            source: source.to_owned(),
            kind,
            key,
            algorithms,
        })
    }

    /// The algorithms tokens signed with this key may name.
    pub fn algorithms(&self) -> &'static [Algorithm] {
        self.algorithms
    }

    /// What the key is, such as `RSA 2048`, `EC P-256` or `Ed25519`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Where the key came from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

type Parsed = (String, DecodingKey, &'static [Algorithm]);

/// The label and DER contents of the single PEM block in `pem`.
fn pem_block(pem: &[u8]) -> Result<(String, Vec<u8>), &'static str> {
    let text = std::str::from_utf8(pem).map_err(|_| "is not a PEM text file")?;
    let mut blocks = text.split("-----BEGIN ").skip(1);
    let block = blocks.next().ok_or("holds no PEM block")?;
    if blocks.next().is_some() {
        return Err("holds more than one PEM block; give one key per file");
    }
    let (label, rest) = block.split_once("-----").ok_or("has a broken PEM header")?;
    let end = format!("-----END {label}-----");
    let (body, _) = rest
        .split_once(&end)
        .ok_or("has no matching PEM END line")?;
    let body: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = STANDARD
        .decode(body)
        .map_err(|_| "has a PEM body that is not base64")?;
    Ok((label.to_owned(), der))
}

/// A SubjectPublicKeyInfo: the algorithm identifier picks the key type.
fn parse_spki(der: &[u8]) -> Result<Parsed, String> {
    let bad = || "is not a well-formed public key".to_owned();
    let (spki, rest) = expect(der, TAG_SEQUENCE).ok_or_else(bad)?;
    if !rest.is_empty() {
        return Err(bad());
    }
    let (algorithm, rest) = expect(spki, TAG_SEQUENCE).ok_or_else(bad)?;
    let (bits, _) = expect(rest, TAG_BIT_STRING).ok_or_else(bad)?;
    // A key is a whole number of bytes: the unused-bits count must be zero.
    let key = match bits.split_first() {
        Some((0, key)) => key,
        _ => return Err(bad()),
    };
    let (oid, params) = expect(algorithm, TAG_OID).ok_or_else(bad)?;
    match oid {
        OID_RSA => rsa_key(key),
        OID_EC => {
            let (curve, _) = expect(params, TAG_OID).ok_or_else(bad)?;
            let (name, algorithm): (&str, &'static [Algorithm]) = match curve {
                OID_P256 => ("EC P-256", &[Algorithm::ES256]),
                OID_P384 => ("EC P-384", &[Algorithm::ES384]),
                _ => return Err("is an EC key on a curve other than P-256 or P-384".to_owned()),
            };
            let key = DecodingKey::from_ec_der(key);
            // Parsing the point now turns a bad key into a start-up error
            // rather than a `bad_signature` on every token.
            probe(&key, algorithm[0]).map_err(|_| format!("is not a valid {name} key"))?;
            Ok((name.to_owned(), key, algorithm))
        }
        OID_ED25519 => {
            if key.len() != 32 {
                return Err("is not a valid Ed25519 key".to_owned());
            }
            let key = DecodingKey::from_ed_der(key);
            probe(&key, Algorithm::EdDSA).map_err(|_| "is not a valid Ed25519 key".to_owned())?;
            Ok(("Ed25519".to_owned(), key, &[Algorithm::EdDSA]))
        }
        _ => Err("is not an RSA, EC (P-256, P-384) or Ed25519 key".to_owned()),
    }
}

/// A PKCS#1 RSAPublicKey: checks the modulus size and exponent.
fn rsa_key(der: &[u8]) -> Result<Parsed, String> {
    let bad = || "is not a well-formed RSA public key".to_owned();
    let (fields, _) = expect(der, TAG_SEQUENCE).ok_or_else(bad)?;
    let (modulus, rest) = expect(fields, TAG_INTEGER).ok_or_else(bad)?;
    let (exponent, _) = expect(rest, TAG_INTEGER).ok_or_else(bad)?;
    let bits = rsa_bits(modulus);
    check_rsa(bits, exponent)?;
    Ok((
        format!("RSA {bits}"),
        DecodingKey::from_rsa_der(der),
        RSA_ALGORITHMS,
    ))
}

/// Refuses moduli outside 2048..=4096 bits and exponents the verifier would
/// refuse at every token, so that both surface at start.
pub(crate) fn check_rsa(bits: usize, exponent: &[u8]) -> Result<(), String> {
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "is a {bits}-bit RSA key; at least {MIN_RSA_BITS} bits are required"
        ));
    }
    if bits > MAX_RSA_BITS {
        return Err(format!(
            "is a {bits}-bit RSA key; at most {MAX_RSA_BITS} bits are supported"
        ));
    }
    let exponent = strip_zeros(exponent);
    let value = (exponent.len() <= 8).then(|| {
        exponent
            .iter()
            .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte))
    });
    match value {
        Some(e) if (3..(1 << 33)).contains(&e) && e % 2 == 1 => Ok(()),
        _ => Err("has an RSA exponent the verifier does not accept".to_owned()),
    }
}

/// The bit length of a big-endian unsigned integer.
pub(crate) fn rsa_bits(modulus: &[u8]) -> usize {
    match strip_zeros(modulus) {
        [] => 0,
        [first, rest @ ..] => rest.len() * 8 + (8 - first.leading_zeros() as usize),
    }
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// Verifies a dummy signature: a key that cannot be parsed fails here, while a
/// good key merely reports a mismatch. (RSA keys are parsed at each
/// verification, so this proves nothing for them; `check_rsa` does that part.)
pub(crate) fn probe(key: &DecodingKey, algorithm: Algorithm) -> Result<(), ()> {
    jsonwebtoken::crypto::verify("AAAA", b"probe", key, algorithm)
        .map(|_| ())
        .map_err(|_| ())
}

const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;

/// Reads one DER element with tag `tag`: its contents and what follows it.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // Long form: the low bits count the length bytes that follow. Keys
        // are far below 4 GiB, so more than four length bytes is an error.
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let len = bytes
            .iter()
            .fold(0usize, |acc, byte| (acc << 8) | usize::from(*byte));
        (len, rest)
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/keys/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).unwrap()
    }

    #[test]
    fn key_types_decide_their_algorithms() {
        let cases: [(&str, &str, &[Algorithm]); 5] = [
            ("rsa.pem", "RSA 2048", RSA_ALGORITHMS),
            ("rsa_pkcs1.pem", "RSA 2048", RSA_ALGORITHMS),
            ("ec_p256.pem", "EC P-256", &[Algorithm::ES256]),
            ("ec_p384.pem", "EC P-384", &[Algorithm::ES384]),
            ("ed25519.pem", "Ed25519", &[Algorithm::EdDSA]),
        ];
        for (file, kind, algorithms) in cases {
            let key = PublicKey::from_pem(file, &fixture(file)).unwrap();
            assert_eq!(key.kind(), kind, "{file}");
            assert_eq!(key.algorithms(), algorithms, "{file}");
            assert!(format!("{key:?}").contains(kind));
        }
    }

    #[test]
    fn unusable_keys_are_refused_with_a_reason() {
        let cases: [(&str, Vec<u8>, &str); 8] = [
            ("rsa_1024.pem", fixture("rsa_1024.pem"), "1024-bit"),
            ("ec_p521.pem", fixture("ec_p521.pem"), "curve other than"),
            ("empty", Vec::new(), "no PEM block"),
            ("binary", vec![0xff, 0xfe], "not a PEM text file"),
            (
                "private",
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec(),
                "is a private key",
            ),
            (
                "cert",
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(),
                "is a certificate",
            ),
            (
                "garbage",
                b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".to_vec(),
                "not a well-formed",
            ),
            (
                "two",
                [fixture("rsa.pem"), fixture("ec_p256.pem")].concat(),
                "more than one",
            ),
        ];
        for (name, pem, expected) in cases {
            let err = PublicKey::from_pem(name, &pem).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("--jwt-public-key / JWT_PUBLIC_KEY: {name}: ")),
                "{err}"
            );
            assert!(err.contains(expected), "{name}: {err}");
        }
    }

    #[test]
    fn a_missing_file_names_the_flag_and_the_path() {
        let err = PublicKey::from_pem_file(Path::new("/nonexistent/key.pem"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--jwt-public-key / JWT_PUBLIC_KEY: /nonexistent/key.pem: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn rsa_sizes_and_exponents() {
        assert_eq!(rsa_bits(&[0, 0x80, 0]), 16);
        assert_eq!(rsa_bits(&[0x01, 0xff]), 9);
        assert_eq!(rsa_bits(&[]), 0);
        assert!(check_rsa(2048, &[1, 0, 1]).is_ok());
        assert!(check_rsa(2048, &[3]).is_ok());
        assert!(check_rsa(2048, &[1]).is_err());
        assert!(check_rsa(2048, &[2]).is_err());
        assert!(check_rsa(2048, &[2, 0, 0, 0, 1]).is_err());
        assert!(check_rsa(8192, &[1, 0, 1]).is_err());
    }
}
