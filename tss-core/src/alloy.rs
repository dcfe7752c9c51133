//! alloy interop (feature `alloy`): signature and address conversions, and
//! [`PoolSigner`], an alloy transaction signer that signs through the pool.
//!
//! # `v`
//!
//! [`EthSignature::v`] is the **recovery id, 0 or 1** (the parity of the nonce point's
//! `y`), never 27/28 and never an EIP-155 value. It maps one to one onto alloy's
//! [`Signature`] (`y_parity`), which is what typed transactions (EIP-2930, EIP-1559,
//! EIP-4844, EIP-7702) put on the wire. The legacy encodings are derived where they are
//! needed: [`EthSignature::to_bytes`] appends `v + 27` (what `ecrecover` and
//! `personal_sign` tooling expect); a legacy transaction's EIP-155 `v`
//! (`v + 35 + 2 * chain_id`) is alloy's business when it encodes a `TxLegacy`.
//!
//! # What followers see
//!
//! [`PoolSigner`] never asks the pool to sign a bare digest. A transaction is sent as its
//! signing encoding (for EIP-1559: `0x02 || rlp(fields)`, whose keccak256 is the signing
//! hash) as the `request` of a pool [`SignProposal`](crate::pool::SignProposal); every
//! follower's [`ProposalValidator`](crate::pool::ProposalValidator) sees the whole
//! transaction, can decode it ([`decode_eip1559_request`]) and check it, and returns the
//! bytes it will sign as [`SigningInput::Message`](crate::pool::SigningInput::Message), so
//! each signer hashes them itself. An EIP-191 message is sent the same way, prefixed.
//! `sign_hash` (a caller's 32-byte digest) is refused with
//! [`UnsupportedSignerOperation::SignHash`]: followers could not tell what the digest
//! stands for. (Full interactive signing of a digest would be safe from the
//! presignature forgery of RUSTSEC-2025-0127, which needs presignatures, but it leaves
//! followers nothing to validate; an embedder that really wants it uses
//! [`PoolNode::propose_sign`] with a validator returning
//! [`SigningInput::Digest`](crate::pool::SigningInput::Digest) for it.)

use alloy_consensus::transaction::RlpEcdsaDecodableTx;
use alloy_consensus::{SignableTransaction, TxEip1559};
use alloy_network::TxSigner;
use alloy_primitives::{eip191_hash_message, Address, ChainId, Signature, B256, U256};
use alloy_signer::{Signer, UnsupportedSignerOperation};
use async_trait::async_trait;
use transport::NodeId;

use crate::ethereum::{keccak256, EthAddress, EthSignature};
use crate::ids::KeyId;
use crate::pool::PoolNode;

impl From<EthAddress> for Address {
    fn from(a: EthAddress) -> Self {
        Address::from(a.0)
    }
}

impl From<Address> for EthAddress {
    fn from(a: Address) -> Self {
        EthAddress(a.into_array())
    }
}

impl From<EthSignature> for Signature {
    /// `y_parity = v` (the recovery id, see the module docs on `v`).
    fn from(sig: EthSignature) -> Self {
        Signature::new(
            U256::from_be_bytes(sig.r),
            U256::from_be_bytes(sig.s),
            sig.v == 1,
        )
    }
}

/// Why an alloy [`Signature`] is not an [`EthSignature`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureConversionError {
    /// `s` is in the upper half of the curve order: Ethereum (EIP-2) refuses it, and an
    /// [`EthSignature`] is always low-s.
    #[error("signature s is not in the lower half of the curve order")]
    HighS,
}

impl TryFrom<Signature> for EthSignature {
    type Error = SignatureConversionError;

    /// `v = y_parity` (0 or 1). Refuses a high-s signature instead of normalising it
    /// silently (normalising would flip the recovery id and yield a different encoding).
    fn try_from(sig: Signature) -> Result<Self, Self::Error> {
        if sig.normalize_s().is_some() {
            return Err(SignatureConversionError::HighS);
        }
        Ok(EthSignature {
            r: sig.r().to_be_bytes(),
            s: sig.s().to_be_bytes(),
            v: u8::from(sig.v()),
        })
    }
}

/// Why a signing request is not a canonical EIP-1559 signing encoding.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestDecodeError {
    /// The first byte is not the EIP-1559 type `0x02`.
    #[error("not an EIP-1559 signing encoding (type byte {0:#04x})")]
    WrongType(u8),
    /// Empty request.
    #[error("empty request")]
    Empty,
    /// The RLP does not decode, has trailing bytes, or does not re-encode to the same
    /// bytes.
    #[error("malformed EIP-1559 signing encoding: {0}")]
    Malformed(String),
}

/// Decodes a pool signing request made by [`PoolSigner`] for an EIP-1559 transaction
/// (`0x02 || rlp(fields)`). Canonical: the transaction must re-encode to exactly the
/// request, so a validator that checks the decoded transaction knows it checked what is
/// signed (the signing hash is keccak256 of these bytes).
pub fn decode_eip1559_request(request: &[u8]) -> Result<TxEip1559, RequestDecodeError> {
    let (&ty, mut rest) = request.split_first().ok_or(RequestDecodeError::Empty)?;
    if ty != 0x02 {
        return Err(RequestDecodeError::WrongType(ty));
    }
    let tx = TxEip1559::rlp_decode(&mut rest)
        .map_err(|e| RequestDecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(RequestDecodeError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    if tx.encoded_for_signing() != request {
        return Err(RequestDecodeError::Malformed("not canonical".into()));
    }
    Ok(tx)
}

/// An alloy transaction signer backed by the pool: [`TxSigner`] and [`Signer`] for
/// [`Signature`].
///
/// Signing proposes a pool signing run ([`PoolNode::propose_sign`]) whose request is the
/// transaction's signing encoding (or the EIP-191-prefixed message): the followers'
/// validators see what they sign. The resulting signature is checked to be over the
/// transaction's signing hash and to recover to the pool's address before it is
/// returned. `sign_hash` on a bare digest is not offered (see the module docs).
///
/// The node calling this is the proposer and one of the signers; its peers' validators
/// decide whether the run happens.
#[derive(Clone, Debug)]
pub struct PoolSigner {
    node: PoolNode,
    key_id: KeyId,
    address: Address,
    chain_id: Option<ChainId>,
    signers: Option<Vec<NodeId>>,
}

impl PoolSigner {
    /// A signer for the pool key `key_id`, which `node` must hold a share of (else
    /// [`crate::TssError::NoShare`]). The address is the key's; no chain id is set.
    pub fn new(node: PoolNode, key_id: KeyId) -> crate::Result<Self> {
        let share = node
            .share(&key_id)
            .ok_or_else(|| crate::TssError::NoShare(key_id.clone()))?;
        Ok(Self {
            address: share.ethereum_address().into(),
            node,
            key_id,
            chain_id: None,
            signers: None,
        })
    }

    /// Signs with exactly these signers (the threshold of committee members, this node
    /// among them) instead of the pool layer's default choice.
    pub fn with_signers(mut self, signers: Vec<NodeId>) -> Self {
        self.signers = Some(signers);
        self
    }

    /// The pool key.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// Runs a pool signing proposal over `message` and checks the result against
    /// `keccak256(message)` and the pool address.
    async fn sign_message_bytes(&self, message: Vec<u8>) -> alloy_signer::Result<Signature> {
        let digest = keccak256(&message);
        let out = self
            .node
            .propose_sign(&self.key_id, message, self.signers.clone())
            .await
            .map_err(alloy_signer::Error::other)?;
        if out.digest != digest {
            return Err(alloy_signer::Error::message(
                "the pool signed a different digest than the request's keccak256",
            ));
        }
        let sig = Signature::from(out.signature);
        let recovered = sig
            .recover_address_from_prehash(&B256::from(digest))
            .map_err(alloy_signer::Error::other)?;
        if recovered != self.address {
            return Err(alloy_signer::Error::message(
                "the pool's signature does not recover to the pool address",
            ));
        }
        Ok(sig)
    }
}

#[async_trait]
impl TxSigner<Signature> for PoolSigner {
    fn address(&self) -> Address {
        self.address
    }

    /// Applies this signer's chain id if the transaction has none (and refuses a
    /// different one), then has the pool sign the transaction's signing encoding.
    async fn sign_transaction(
        &self,
        tx: &mut dyn SignableTransaction<Signature>,
    ) -> alloy_signer::Result<Signature> {
        if let Some(chain_id) = self.chain_id {
            if !tx.set_chain_id_checked(chain_id) {
                return Err(alloy_signer::Error::TransactionChainIdMismatch {
                    signer: chain_id,
                    tx: tx.chain_id().unwrap_or_default(),
                });
            }
        }
        let message = tx.encoded_for_signing();
        let sig = self.sign_message_bytes(message).await?;
        debug_assert_eq!(
            B256::from(keccak256(&tx.encoded_for_signing())),
            tx.signature_hash()
        );
        Ok(sig)
    }
}

#[async_trait]
impl Signer<Signature> for PoolSigner {
    /// Refused: the pool does not sign a caller's bare digest through this adapter
    /// (followers could not validate it). Use [`Signer::sign_message`] or
    /// [`TxSigner::sign_transaction`], which send the content.
    async fn sign_hash(&self, _hash: &B256) -> alloy_signer::Result<Signature> {
        Err(alloy_signer::Error::UnsupportedOperation(
            UnsupportedSignerOperation::SignHash,
        ))
    }

    /// EIP-191: the request is `"\x19Ethereum Signed Message:\n" || len || message`, whose
    /// keccak256 is the EIP-191 hash; followers see the message.
    async fn sign_message(&self, message: &[u8]) -> alloy_signer::Result<Signature> {
        let mut prefixed = format!("\x19Ethereum Signed Message:\n{}", message.len()).into_bytes();
        prefixed.extend_from_slice(message);
        debug_assert_eq!(
            B256::from(keccak256(&prefixed)),
            eip191_hash_message(message)
        );
        self.sign_message_bytes(prefixed).await
    }

    fn address(&self) -> Address {
        self.address
    }

    fn chain_id(&self) -> Option<ChainId> {
        self.chain_id
    }

    fn set_chain_id(&mut self, chain_id: Option<ChainId>) {
        self.chain_id = chain_id;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k256::ecdsa::SigningKey;

    #[test]
    fn signatures_and_addresses_round_trip_and_v_is_the_y_parity() {
        for i in 0..16u8 {
            let key = SigningKey::random(&mut rand::thread_rng());
            let digest = keccak256(&[i]);
            let (sig, recid) = key.sign_prehash_recoverable(&digest).unwrap();
            let (r, s) = sig.split_bytes();
            let eth =
                EthSignature::from_rs(r.into(), s.into(), &digest, key.verifying_key()).unwrap();
            let alloy_sig = Signature::from(eth);
            assert_eq!(alloy_sig.v(), recid.is_y_odd());
            assert_eq!(EthSignature::try_from(alloy_sig).unwrap(), eth);
            let address = EthAddress::from_public_key(key.verifying_key());
            assert_eq!(
                alloy_sig
                    .recover_address_from_prehash(&B256::from(digest))
                    .unwrap(),
                Address::from(address)
            );
            assert_eq!(EthAddress::from(Address::from(address)), address);
            // The 65-byte legacy form carries v + 27; alloy's `as_bytes` agrees.
            assert_eq!(alloy_sig.as_bytes(), eth.to_bytes());
        }
    }

    #[test]
    fn a_high_s_alloy_signature_is_refused() {
        let key = SigningKey::random(&mut rand::thread_rng());
        let digest = keccak256(b"high s");
        let (sig, _) = key.sign_prehash_recoverable(&digest).unwrap();
        let (r, s) = sig.split_bytes();
        let n = U256::from_be_slice(
            &hex::decode("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141")
                .unwrap(),
        );
        let high = Signature::new(U256::from_be_slice(&r), n - U256::from_be_slice(&s), false);
        assert_eq!(
            EthSignature::try_from(high),
            Err(SignatureConversionError::HighS)
        );
    }

    #[test]
    fn requests_decode_only_when_canonical() {
        let tx = TxEip1559 {
            chain_id: 1,
            nonce: 7,
            gas_limit: 100_000,
            max_fee_per_gas: 30,
            max_priority_fee_per_gas: 2,
            to: alloy_primitives::TxKind::Call(Address::repeat_byte(9)),
            value: U256::ZERO,
            access_list: Default::default(),
            input: vec![1, 2, 3].into(),
        };
        let bytes = tx.encoded_for_signing();
        assert_eq!(decode_eip1559_request(&bytes).unwrap(), tx);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode_eip1559_request(&trailing).is_err());
        let mut legacy = bytes.clone();
        legacy[0] = 0x01;
        assert_eq!(
            decode_eip1559_request(&legacy),
            Err(RequestDecodeError::WrongType(1))
        );
        assert_eq!(decode_eip1559_request(&[]), Err(RequestDecodeError::Empty));
    }
}
