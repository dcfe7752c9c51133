#!/usr/bin/env python3
"""Writes the committed seed corpus under fuzz/corpus/<target>/ (valid and invalid inputs).

Re-run after changing an input format: `python3 fuzz/make_seeds.py`.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(HERE, "corpus", target, name), "wb") as f:
        f.write(data)


# ---- wire_frame: version 1 | session id (32) | kind (0 direct, 1 broadcast) | payload
def frame(kind, payload, version=1, session=b"\x09" * 32):
    return bytes([version]) + session + bytes([kind]) + payload

# postcard ReshareMsg: variant index (LEB128 varint) then fields; [u8; 32] and NodeId are
# 32 raw bytes, a Vec or byte string is a varint length then its items.
# A signed view of one dealer's commitments: digest (32), signature (a Vec: 64 bytes).
view = b"\xab" * 32 + b"\x40" + b"\x34" * 64
# Echo: a Vec of views (one dealer here).
echo = b"\x02" + b"\x01" + view
# Complaint: Some(views) (0x01 then the Vec), dealer, evidence variant 1
# (InvalidCommitments, no fields).
complaint = b"\x03" + b"\x01" + b"\x01" + view + b"\x01" * 32 + b"\x01"
confirm = b"\x04" + b"\xcd" * 32
put("wire_frame", "echo_broadcast", frame(1, echo))
put("wire_frame", "complaint_broadcast", frame(1, complaint))
put("wire_frame", "confirm_direct", frame(0, confirm))
put("wire_frame", "empty_payload", frame(0, b""))
put("wire_frame", "bad_version", frame(1, echo, version=2))
put("wire_frame", "bad_kind", frame(7, echo))
put("wire_frame", "short_header", b"\x01" + b"\x00" * 10)
put("wire_frame", "empty", b"")
put("wire_frame", "trailing_bytes", frame(1, echo + b"\x00"))
# Commitments with a context, then a commitment count of u32::MAX: nothing follows.
put("wire_frame", "huge_length_prefix", frame(1, b"\x00" + b"\x11" * 32 + b"\xff\xff\xff\xff\x0f"))

# ---- keystore_record: mode byte, then input
salt = bytes(range(16))
# Format version 2 (versioned pointers and state); 1 is refused as no longer supported.
header = b"MPCKSTR1" + b"\x02" + b"\x01" + salt + struct.pack(">III", 8, 1, 1)
check = b"\x01" + b"\x00" * 12 + b"\x11" * 41
put("keystore_record", "meta_valid_shape", b"\x00" + header + check)
put("keystore_record", "meta_keyfile", b"\x00" + header[:9] + b"\x02" + header[10:] + check)
put("keystore_record", "meta_bad_magic", b"\x00" + b"XPCKSTR1" + header[8:] + check)
put("keystore_record", "meta_bad_version", b"\x00" + header[:8] + b"\x09" + header[9:] + check)
put("keystore_record", "meta_format_1", b"\x00" + header[:8] + b"\x01" + header[9:] + check)
put("keystore_record", "meta_huge_kdf", b"\x00" + header[:26] + struct.pack(">III", 0xFFFFFFFF, 99, 99) + check)
put("keystore_record", "meta_short", b"\x00" + header[:20])


def manifest(names):
    out = struct.pack(">I", len(names))
    for n in names:
        out += struct.pack(">H", len(n)) + n
    return out

put("keystore_record", "manifest_valid", b"\x01" + manifest([b"key_share", b"aux_info"]))
put("keystore_record", "manifest_empty", b"\x01" + manifest([]))
put("keystore_record", "manifest_bad_name", b"\x01" + manifest([b"a/b"]))
put("keystore_record", "manifest_truncated", b"\x01" + manifest([b"key_share"])[:-3])
put("keystore_record", "manifest_count_lies", b"\x01" + struct.pack(">I", 0xFFFFFFFF) + b"\x00\x01x")
put("keystore_record", "sealed_garbage", b"\x02" + b"\x01" + b"\x07" * 12 + b"\x99" * 40)
put("keystore_record", "sealed_short", b"\x02" + b"\x01" + b"\x07" * 12)
put("keystore_record", "sealed_bad_version", b"\x02" + b"\x02" + b"\x07" * 40)
put("keystore_record", "roundtrip", b"\x03" + b"\x02" + b"serialized key share")
put("keystore_record", "roundtrip_flip", b"\x03" + b"\x05" + b"serialized key share")
put("keystore_record", "roundtrip_empty", b"\x03" + b"\x03")

# ---- node_config: TOML text
A = "01" * 32
B = "02" * 32
C = "03" * 32
valid = f'''[node]
identity_file = "identity.key"
data_dir = "data"
key_id = "sequencer-key"
rpc_listen = "127.0.0.1:8645"

[keystore]
passphrase_env = "NODE_SHELL_PASSPHRASE"
insecure_fast_kdf = true

[transport]
listen = "/ip4/127.0.0.1/tcp/9001"
session_idle_timeout_secs = 60

[[peers]]
node_id = "{A}"
address = "/ip4/127.0.0.1/tcp/9001"

[[peers]]
node_id = "{B}"
address = "/ip4/127.0.0.1/tcp/9002"

[[peers]]
node_id = "{C}"
address = "/ip4/127.0.0.1/tcp/9003"

[pool]
whitelist = ["{A}", "{B}", "{C}"]
min_stake = 10
max_stake = 1000
min_members = 3
max_members = 10
epoch_seconds = 30
epoch_seed = "{'ab' * 32}"

[[pool.members]]
node_id = "{A}"
stake = 100

[[pool.members]]
node_id = "{B}"
stake = 100

[[pool.members]]
node_id = "0x{C}"
stake = 100

[tss]
insecure_test_primes_index = 0
'''
put("node_config", "valid", valid)
put("node_config", "public_rpc", valid.replace("127.0.0.1:8645", "0.0.0.0:8645"))
put("node_config", "unknown_field", valid.replace("[transport]", "[transport]\nlisten_typo = 1"))
put("node_config", "bad_node_id", valid.replace(f'node_id = "{B}"', 'node_id = "zz"', 1))
put("node_config", "stake_out_of_range", valid.replace("stake = 100", "stake = 1", 1))
put("node_config", "missing_pool", valid.split("[pool]")[0])
put("node_config", "zero_idle", valid.replace("session_idle_timeout_secs = 60", "session_idle_timeout_secs = 0"))
put("node_config", "not_toml", "[node\nidentity_file = ")
put("node_config", "empty", "")

# ---- protocol_party: flags, then records sender | kind | len | payload
def rec(sender, kind, payload):
    return bytes([sender, kind, len(payload)]) + payload

put("protocol_party", "all_honest", b"\x3f")
put("protocol_party", "honest_round1_only", b"\x0f")
put("protocol_party", "nothing", b"\x00")
put("protocol_party", "garbage_from_a", b"\x00" + rec(0, 1, b"\xff\x00\x13"))
put("protocol_party", "wrong_echo_after_honest", b"\x2f" + rec(2, 1, echo) + rec(0, 1, echo) + rec(1, 1, echo))
put("protocol_party", "complaint_from_c", b"\x2f" + rec(2, 1, complaint))
# Share: the scalar, then the signature (a byte string: length 64, then its bytes).
put("protocol_party", "share_broadcast_by_a", b"\x00" + rec(0, 1, b"\x01" + b"\x00" * 33 + b"\x40" + b"\x00" * 64))
put("protocol_party", "confirm_from_dealer", b"\x3f" + rec(0, 1, confirm))
put("protocol_party", "equivocating_echo", b"\x3f" + rec(0, 1, echo))
put("protocol_party", "non_participant", b"\x00" + rec(3, 1, echo))

# ---- party_signing / party_keygen: `tss_fuzz::party::PartyInput` in `arbitrary`'s format
# (arbitrary 1.x): integers little-endian; an enum is a u32 `x` choosing variant
# `(x * variants) >> 32`; a Vec is items each preceded by a byte whose low bit says "one
# more" (also the last field's). pick, then edits. Unedited inputs (b"\x00", b"\x01")
# replay the recorded run and must complete.
def le32(x):
    return struct.pack("<I", x)


def u16(x):
    return struct.pack("<H", x)


def peer_edit(variant):  # PeerEdit has 7 variants
    return le32([0, 0x30000000, 0x50000000, 0x70000000, 0xA0000000, 0xC0000000, 0xF0000000][variant])


FIELDS, DROP, DUP, SWAP, TOGGLE, MOVE, INJECT = range(7)


def op(variant):  # Op has 8 variants
    return le32(variant * 0x20000000)


FLIP, OVERWRITE, SET, ZERO, ONES, REMOVE, DUPLICATE, SPLICE = range(8)


def fields(msg, *edits):  # edits: (node, op bytes)
    out = peer_edit(FIELDS) + bytes([msg])
    for node, o in edits:
        out += b"\x01" + u16(node) + o
    return out + b"\x00"


def party(pick, *edits):
    return bytes([pick]) + b"".join(b"\x01" + e for e in edits)


for t in ("party_signing", "party_keygen"):
    os.makedirs(os.path.join(HERE, "corpus", t), exist_ok=True)
put("party_signing", "honest_presign_online", party(0))
put("party_signing", "honest_full_sign", party(1))
put("party_signing", "edit_presign_drop_first", party(0, peer_edit(DROP) + b"\x00"))
put("party_signing", "edit_presign_flip_bit", party(0, fields(1, (7, op(FLIP) + u16(13)))))
put("party_signing", "edit_sign_zero_field", party(1, fields(2, (5, op(ZERO)))))
put("party_signing", "edit_sign_toggle_kind", party(1, peer_edit(TOGGLE) + b"\x00"))
put("party_signing", "edit_presign_swap", party(0, peer_edit(SWAP) + b"\x00\x01"))
put("party_signing", "edit_presign_set_small", party(0, fields(3, (40, op(SET) + struct.pack("<Q", 1)))))
put("party_signing", "edit_online_move", party(0, peer_edit(MOVE) + b"\x00\x01"))
put("party_signing", "edit_sign_splice", party(1, fields(3, (9, op(SPLICE) + b"\x01" + u16(9)))))
put("party_keygen", "honest_keygen", party(0))
put("party_keygen", "honest_aux_only", party(1))
put("party_keygen", "edit_dkg_drop_first", party(0, peer_edit(DROP) + b"\x00"))
put("party_keygen", "edit_dkg_flip_bit", party(0, fields(1, (3, op(FLIP) + u16(77)))))
put("party_keygen", "edit_aux_flip_bit", party(1, fields(1, (30, op(FLIP) + u16(5)))))
print("seeds written")
