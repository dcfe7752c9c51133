//! The alloy adapter (feature `alloy`): a pool of 3 signs an EIP-1559 transaction through
//! `PoolSigner`; every follower decodes and checks the transaction itself, and the
//! signature recovers to the pool address.

mod common;

use std::sync::Arc;
use std::time::Duration;

use alloy_consensus::{SignableTransaction, TxEip1559};
use alloy_network::TxSigner;
use alloy_primitives::{Address, TxKind, B256, U256};
use alloy_signer::Signer;
use async_trait::async_trait;
use common::{keygen_and_wait, node_ids};
use transport::{InMemoryNetwork, NodeId};
use tss_core::alloy::{decode_eip1559_request, PoolSigner};
use tss_core::pool::{
    KeygenProposal, MemoryShareStore, PoolConfig, PoolNode, ProposalValidator, Rejection,
    ReshareProposal, SignProposal, SigningInput,
};
use tss_core::{Committee, InsecureTestPrimes, KeyId, PublicKeyInfo};

const CHAIN: u64 = 31337;
const INBOX: Address = Address::repeat_byte(0x11);

/// Signs only EIP-1559 transactions on `CHAIN` to `INBOX`, decoded from the request.
struct TxRules;

#[async_trait]
impl ProposalValidator for TxRules {
    async fn check_keygen(&self, _: NodeId, p: &KeygenProposal) -> Result<Vec<u8>, Rejection> {
        Ok(p.context.clone())
    }
    async fn check_sign(
        &self,
        _: NodeId,
        p: &SignProposal,
        _: &PublicKeyInfo,
    ) -> Result<SigningInput, Rejection> {
        let tx = decode_eip1559_request(&p.request).map_err(|e| Rejection::new(e.to_string()))?;
        if tx.chain_id != CHAIN || tx.to != TxKind::Call(INBOX) {
            return Err(Rejection::new("not a transaction to the inbox"));
        }
        // What is signed is this node's own encoding of the transaction it checked.
        Ok(SigningInput::Message(tx.encoded_for_signing()))
    }
    async fn check_reshare(
        &self,
        _: NodeId,
        p: &ReshareProposal,
        _: Option<&PublicKeyInfo>,
    ) -> Result<Vec<u8>, Rejection> {
        Ok(p.context.clone())
    }
}

fn tx(to: Address, nonce: u64) -> TxEip1559 {
    TxEip1559 {
        chain_id: CHAIN,
        nonce,
        gas_limit: 100_000,
        max_fee_per_gas: 2_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: TxKind::Call(to),
        value: U256::ZERO,
        access_list: Default::default(),
        input: vec![0xde, 0xad].into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_signs_a_transaction_through_the_alloy_adapter_and_followers_check_it() {
    let ids = node_ids(3);
    let key = KeyId::new("alloy-adapter").unwrap();
    let network = InMemoryNetwork::new();
    let mut nodes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        nodes.push(
            PoolNode::start(
                PoolConfig::new(ids.clone()).with_session_idle_timeout(Duration::from_secs(600)),
                Arc::new(network.endpoint(*id)),
                common::signer_for(id),
                Arc::new(TxRules),
                Arc::new(MemoryShareStore::new()),
                Arc::new(InsecureTestPrimes::new(i)),
                std::slice::from_ref(&key),
            )
            .await
            .unwrap(),
        );
    }
    let share = keygen_and_wait(
        &nodes[0],
        &nodes[1..],
        &key,
        Committee::new(ids.clone(), 2).unwrap(),
        vec![],
        Duration::from_secs(600),
    )
    .await;
    let pool_address = Address::from(share.ethereum_address());

    let signer = PoolSigner::new(nodes[0].clone(), key.clone())
        .unwrap()
        .with_chain_id(Some(CHAIN));
    assert_eq!(TxSigner::address(&signer), pool_address);

    // A transaction the followers accept: the signature is over its signing hash and
    // recovers to the pool address.
    let mut good = tx(INBOX, 0);
    let sig = signer.sign_transaction(&mut good).await.unwrap();
    let signed = good.clone().into_signed(sig);
    assert_eq!(signed.recover_signer().unwrap(), pool_address);
    assert_eq!(
        sig.recover_address_from_prehash(&good.signature_hash())
            .unwrap(),
        pool_address
    );

    // A transaction to another contract: the followers decode it and refuse.
    let mut bad = tx(Address::repeat_byte(0x22), 1);
    let err = signer.sign_transaction(&mut bad).await.unwrap_err();
    let pool_err = err.to_string();
    assert!(
        pool_err.contains("not a transaction to the inbox") || pool_err.contains("abort"),
        "refused by a follower: {pool_err}"
    );

    // A bare digest is never signed through the adapter.
    let err = signer.sign_hash(&B256::repeat_byte(7)).await.unwrap_err();
    assert!(err.is_unsupported());

    // The chain id is enforced.
    let mut other_chain = tx(INBOX, 2);
    other_chain.chain_id = 1;
    assert!(matches!(
        signer.sign_transaction(&mut other_chain).await,
        Err(alloy_signer::Error::TransactionChainIdMismatch { .. })
    ));
}
