//! The parties a cggmp21 abort blames, read from the error's `Debug` text.
//!
//! cggmp21 0.6.3 and cggmp21-keygen 0.5.0 keep their abort types private
//! (`signing::SigningAborted`, `key_refresh::ProtocolAborted` with its `utils::AbortBlame`
//! list, `KeygenAborted`): the blamed party indices are only visible through `Debug`.
//! **This depends on those exact versions' `Debug` output** (cggmp21 is pinned to
//! `=0.6.3` in the workspace `Cargo.toml`; cggmp21-keygen 0.5.0, its dependency, is
//! locked in `Cargo.lock`); the shapes below are pinned by this module's unit tests (texts taken
//! from real aborts) and by the end-to-end test `tests/abort_culprits.rs`, which makes a
//! real abort and checks the named culprit. A cggmp21 upgrade must re-check them.
//!
//! The reader is strict: only these shapes, outside quoted strings, are read, and any of
//! them that does not parse exactly makes the whole answer empty. An unknown shape gives
//! an empty list, never a wrong name:
//!
//! - `AbortBlame { faulty_party: N, .. }` (keygen's invalid decommitment, Schnorr proof
//!   or missing chain code; every aux-info abort reason);
//! - `EncProofOfK([(N, ..), ..])`, `InvalidPsi([(N, ..), ..])`,
//!   `InvalidPsiPrimePrime([(N, ..), ..])` (signing and presigning: bad ZK proofs);
//! - `FeldmanVerificationFailed { parties: [N, ..] }` and
//!   `InvalidDataSize { parties: [N, ..] }` (keygen: inconsistent share, wrong sizes).
//!
//! A failed reliability check (`Round1NotReliable`, `Round1aNotReliable`) blames nobody
//! here: cggmp21 lists the parties whose echo differs from this party's view, which are
//! honest if another party sent different broadcasts to different parties.

/// Markers of lists of tuples whose first element is the blamed party's index.
const TUPLE_LISTS: &[&str] = &["EncProofOfK(", "InvalidPsi(", "InvalidPsiPrimePrime("];
/// Markers of lists of blamed party indices.
const INDEX_LISTS: &[&str] = &[
    "FeldmanVerificationFailed { parties: ",
    "InvalidDataSize { parties: ",
];
/// Marker of one blamed party.
const ABORT_BLAME: &str = "AbortBlame { faulty_party: ";
/// Aborts whose listed parties are suspects, not proven culprits.
const UNRELIABLE: &[&str] = &["Round1NotReliable", "Round1aNotReliable"];

/// Reads the blamed indices that follow a marker; `None` if they do not parse.
type Reader = fn(&str) -> Option<Vec<u16>>;

/// The party indices (positions in the protocol's party list) that the cggmp21 abort
/// with `Debug` text `debug` blames, sorted and without repeats; empty if it blames
/// nobody provably or its text has an unknown shape.
pub(crate) fn blamed_indices(debug: &str) -> Vec<u16> {
    let Some(text) = without_literals(debug) else {
        return Vec::new();
    };
    if UNRELIABLE.iter().any(|m| !occurrences(&text, m).is_empty()) {
        return Vec::new();
    }
    let mut found = Vec::new();
    let readers: [(&[&str], Reader); 3] = [
        (&[ABORT_BLAME], read_abort_blame),
        (TUPLE_LISTS, read_tuple_list),
        (INDEX_LISTS, read_index_list),
    ];
    for (markers, read) in readers {
        for marker in markers {
            for at in occurrences(&text, marker) {
                match read(&text[at + marker.len()..]) {
                    Some(indices) => found.extend(indices),
                    None => return Vec::new(),
                }
            }
        }
    }
    found.sort_unstable();
    found.dedup();
    found
}

/// `text` with the contents of string and char literals removed (`""` and `''` stay), so
/// no marker is read from a quoted text; `None` if a literal does not end.
fn without_literals(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '"' || c == '\'' {
            loop {
                match chars.next()? {
                    '\\' => {
                        chars.next()?;
                    }
                    end if end == c => break,
                    _ => {}
                }
            }
            out.push(c);
        }
    }
    Some(out)
}

/// Where `marker` starts in `text`, where it is not the tail of a longer name.
fn occurrences(text: &str, marker: &str) -> Vec<usize> {
    text.match_indices(marker)
        .map(|(at, _)| at)
        .filter(|&at| {
            !text[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
        .collect()
}

/// A decimal `u16` at the start of `s`, and the rest.
fn read_u16(s: &str) -> Option<(u16, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    Some((s[..digits].parse().ok()?, &s[digits..]))
}

/// After `AbortBlame { faulty_party: `: `N, `.
fn read_abort_blame(s: &str) -> Option<Vec<u16>> {
    let (i, rest) = read_u16(s)?;
    rest.starts_with(", ").then(|| vec![i])
}

/// After `FeldmanVerificationFailed { parties: `: `[N, M, ..] }`.
fn read_index_list(s: &str) -> Option<Vec<u16>> {
    let mut rest = s.strip_prefix('[')?;
    let mut found = Vec::new();
    if let Some(after) = rest.strip_prefix(']') {
        return after.starts_with(" }").then_some(found);
    }
    loop {
        let (i, after) = read_u16(rest)?;
        found.push(i);
        if let Some(after) = after.strip_prefix(']') {
            return after.starts_with(" }").then_some(found);
        }
        rest = after.strip_prefix(", ")?;
    }
}

/// After `InvalidPsi(`: `[(N, ..), (M, ..)])`, each tuple's nested brackets balanced.
fn read_tuple_list(s: &str) -> Option<Vec<u16>> {
    let mut rest = s.strip_prefix('[')?;
    let mut found = Vec::new();
    if let Some(after) = rest.strip_prefix(']') {
        return after.starts_with(')').then_some(found);
    }
    loop {
        let (i, after) = read_u16(rest.strip_prefix('(')?)?;
        found.push(i);
        let after = after.strip_prefix(", ")?;
        let after = &after[tuple_end(after)?..];
        if let Some(after) = after.strip_prefix(']') {
            return after.starts_with(')').then_some(found);
        }
        rest = after.strip_prefix(", ")?;
    }
}

/// The position just after the `)` that closes a tuple whose `(` came before `s`.
fn tuple_end(s: &str) -> Option<usize> {
    let mut open = Vec::new();
    for (at, c) in s.char_indices() {
        match c {
            '(' | '[' | '{' => open.push(c),
            ')' | ']' | '}' => {
                let expected = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                match open.pop() {
                    Some(o) if o == expected => {}
                    None if c == ')' => return Some(at + 1),
                    _ => return None,
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_abort_blame_lists() {
        // As made by tests/abort_culprits.rs (aux-info, a bad decommitment from party 1).
        let aux = "KeyRefreshError(Aborted(ProtocolAborted { reason: InvalidDecommitment, \
                   parties: [AbortBlame { faulty_party: 1, data_message: 5, proof_message: 0 }] }))";
        assert_eq!(blamed_indices(aux), vec![1]);
        let two = "KeyRefreshError(Aborted(ProtocolAborted { reason: InvalidModProof, parties: \
                   [AbortBlame { faulty_party: 2, data_message: 5, proof_message: 9 }, \
                   AbortBlame { faulty_party: 0, data_message: 3, proof_message: 7 }] }))";
        assert_eq!(blamed_indices(two), vec![0, 2]);
        let keygen = "KeygenError(Aborted(InvalidSchnorrProof([AbortBlame { faulty_party: 1, \
                      data_message: 4, proof_message: 8 }])))";
        assert_eq!(blamed_indices(keygen), vec![1]);
    }

    #[test]
    fn reads_signing_tuples_with_nested_proof_errors() {
        // As made by tests/abort_culprits.rs (presign, a bad round-2 message from signer 1).
        let psi =
            "SigningError(Aborted(InvalidPsi([(1, 0, 6, (Some(InvalidProof(EqualityCheck(1))), \
                   None, Some(InvalidProof(EqualityCheck(1)))))])))";
        assert_eq!(blamed_indices(psi), vec![1]);
        let psis =
            "SigningError(Aborted(InvalidPsi([(0, 2, 9, (None, Some(InvalidProof(RangeCheck(7))), \
                    None)), (2, 3, 8, (None, None, Some(InvalidProof(ModPow))))])))";
        assert_eq!(blamed_indices(psis), vec![0, 2]);
        let two = "SigningError(Aborted(EncProofOfK([(0, 1, 2), (3, 4, 5)])))";
        assert_eq!(blamed_indices(two), vec![0, 3]);
        let pp = "SigningError(Aborted(InvalidPsiPrimePrime([(2, 11, 14)])))";
        assert_eq!(blamed_indices(pp), vec![2]);
    }

    #[test]
    fn reads_keygen_index_lists() {
        let feldman = "KeygenError(Aborted(FeldmanVerificationFailed { parties: [2, 0] }))";
        assert_eq!(blamed_indices(feldman), vec![0, 2]);
        let size = "KeygenError(Aborted(InvalidDataSize { parties: [1] }))";
        assert_eq!(blamed_indices(size), vec![1]);
    }

    #[test]
    fn unreliable_broadcasts_blame_nobody() {
        for text in [
            "SigningError(Aborted(Round1aNotReliable([(1, 4)])))",
            "KeygenError(Aborted(Round1NotReliable([(1, 4)])))",
            "KeyRefreshError(Aborted(ProtocolAborted { reason: Round1NotReliable, parties: \
             [AbortBlame { faulty_party: 1, data_message: 4, proof_message: 4 }] }))",
        ] {
            assert_eq!(blamed_indices(text), Vec::<u16>::new(), "{text}");
        }
    }

    #[test]
    fn unknown_or_broken_shapes_blame_nobody() {
        for text in [
            "",
            "SigningError(Aborted(MismatchedDelta))",
            "SigningError(Aborted(SignatureInvalid))",
            "KeyRefreshError(IoError(ReceiveMessageEof))",
            // Cut short, or not a number where the index should be.
            "SigningError(Aborted(InvalidPsi([(1, 2, 9, (None, None",
            "SigningError(Aborted(EncProofOfK([(x, 1, 2)])))",
            "AbortBlame { faulty_party: 70000, data_message: 1, proof_message: 1 }",
            "AbortBlame { faulty_party: 1 }",
            "KeygenError(Aborted(InvalidDataSize { parties: [1, ] }))",
            // A readable blame beside a broken one: nothing, not half an answer.
            "[AbortBlame { faulty_party: 1, data_message: 1, proof_message: 1 }, \
             AbortBlame { faulty_party: -1, data_message: 1, proof_message: 1 }]",
            // Longer names that merely end like a marker.
            "MyEncProofOfK([(1, 2, 3)])",
            "Foo(NotAbortBlame { faulty_party: 1, data_message: 1, proof_message: 1 })",
            // An unterminated string.
            "Error(\"AbortBlame { faulty_party: 1, ",
        ] {
            assert_eq!(blamed_indices(text), Vec::<u16>::new(), "{text}");
        }
    }

    #[test]
    fn quoted_text_is_never_read() {
        let text = "Wrapper { reason: \"AbortBlame { faulty_party: 1, data_message: 1, \
                    proof_message: 1 } \\\" EncProofOfK([(2, 0, 0)])\", c: '\"' }";
        assert_eq!(blamed_indices(text), Vec::<u16>::new());
        let text = "Wrapper(\"it's \\\"fine\\\"\", EncProofOfK([(2, 0, 0)]))";
        assert_eq!(blamed_indices(text), vec![2]);
    }
}
