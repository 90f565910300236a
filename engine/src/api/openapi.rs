//! The OpenAPI 3.0 document of the management API, served at
//! `/v1/openapi.json`. A test checks that it lists exactly the router's
//! routes and methods, so it cannot drift from the code.

use serde_json::{json, Value};

fn error_responses() -> Value {
    json!({
        "400": {"$ref": "#/components/responses/Error"},
        "413": {"$ref": "#/components/responses/Error"},
        "500": {"$ref": "#/components/responses/Error"},
        "401": {"$ref": "#/components/responses/Error"},
        "404": {"$ref": "#/components/responses/Error"},
        "409": {"$ref": "#/components/responses/Error"},
        "503": {"$ref": "#/components/responses/Error"}
    })
}

fn with_errors(ok: Value) -> Value {
    let mut responses = error_responses();
    for (status, body) in ok.as_object().expect("object").iter() {
        responses[status] = body.clone();
    }
    responses
}

fn json_body(schema: &str) -> Value {
    json!({"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn json_list(schema: &str) -> Value {
    json!({"description": "OK", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": format!("#/components/schemas/{schema}")}}}}})
}

fn request(schema: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn name_parameter(what: &str) -> Value {
    json!([{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}, "description": format!("{what} name")}])
}

fn trace_walk_parameters() -> Value {
    json!([
        {"name": "batch", "in": "path", "required": true, "schema": {"type": "string"}},
        {"name": "ranges", "in": "query", "required": false, "schema": {"type": "string"},
         "description": "Declared ranges, NAME:MIN:MAX:UNIT separated by commas (e.g. temperature:0:4:C); readings outside them are flagged as breaches"}
    ])
}

/// The HP chain's read routes (blocks, proofs, audit, trace walks); kept
/// apart so that no single `json!` grows past the macro recursion limit.
fn chain_paths() -> Value {
    json!({
        "/v1/chain/accounts/{key}": {
            "parameters": [{"name": "key", "in": "path", "required": true, "schema": {"type": "string"}, "description": "The account's ed25519 public key (64 hex digits)"}],
            "get": {"summary": "An account as of the head of the best chain: balance, the nonce its next transaction must carry (after its pending ones), its votes, and its candidacy. An unknown key is an empty account (balance 0, next nonce 0).",
                "responses": with_errors(json!({"200": json_body("Account")}))}
        },
        "/v1/chain/transactions": {
            "post": {"summary": "Submit a transaction signed by the client's own key (transfer, vote, register_candidate, ...): checked against the head state and the pending pool (signature, chain, nonce, balance, candidates), then gossiped; final after a few slots (GET /v1/chain/proof/{tx}). Refusals: 400 tx.bad_encoding, tx.bad_signature, tx.wrong_chain, tx.invalid_payload; 409 tx.wrong_nonce (a replay or a gap), tx.insufficient_balance, tx.unknown_candidate, tx.duplicate; 503 tx.pool_full.",
                "requestBody": request("SubmitTransaction"),
                "responses": with_errors(json!({"202": {"description": "{\"tx\": id}", "content": {"application/json": {"schema": {"type": "object", "properties": {"tx": {"type": "string"}}}}}}}))}
        },
        "/v1/chain/blocks": {
            "parameters": [
                {"name": "from", "in": "query", "required": false, "schema": {"type": "integer"}, "description": "First height (default: the latest `limit` blocks)"},
                {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "default": 20, "minimum": 1, "maximum": 500}}
            ],
            "get": {"summary": "Blocks of the best chain, ascending, each with its finality", "responses": with_errors(json!({"200": {"description": "{head_height, final_height, blocks: [BlockSummary]}"}}))}
        },
        "/v1/chain/blocks/{id}": {
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": "A height, or a block id (64 hex digits)"}],
            "get": {"summary": "One block with its transactions", "responses": with_errors(json!({"200": json_body("Block")}))}
        },
        "/v1/chain/proof/{tx}": {
            "parameters": [{"name": "tx", "in": "path", "required": true, "schema": {"type": "string"}, "description": "Transaction id (64 hex digits)"}],
            "get": {"summary": "Self-contained inclusion proof of a transaction: the record and its canonical bytes, Merkle path, signed block header, the signed headers above it and confirmations up to finality. Verify offline with `hpchain chain verify-proof`.",
                "responses": with_errors(json!({"200": json_body("InclusionProof")}))}
        },
        "/v1/audit": {
            "parameters": [
                {"name": "volume", "in": "query", "required": false, "schema": {"type": "string"}, "description": "Only records of volume/NAME"},
                {"name": "target", "in": "query", "required": false, "schema": {"type": "string"}, "description": "Only records of this target, e.g. pool/rbd, node/1"}
            ],
            "get": {"summary": "Audit records (every committed or refused map change): final ones in chain order, then those not final yet", "responses": with_errors(json!({"200": json_list("AuditRecord")}))}
        },
        "/v1/trace/{batch}/upstream": {
            "parameters": trace_walk_parameters(),
            "get": {"summary": "The batch and every batch it was made from, transitively, each event with its proof reference and out-of-range readings", "responses": with_errors(json!({"200": json_body("TraceWalk")}))}
        },
        "/v1/trace/{batch}/downstream": {
            "parameters": trace_walk_parameters(),
            "get": {"summary": "The batch and every batch made from it, transitively (the recall set), each event with its proof reference and out-of-range readings", "responses": with_errors(json!({"200": json_body("TraceWalk")}))}
        }
    })
}

/// Schemas of the HP chain's answers.
fn chain_schemas() -> Value {
    json!({
        "ChainStatus": {"type": "object", "properties": {
            "chain_id": {"type": "string"},
            "chain_hash": {"type": "string", "description": "The chain's identity; every transaction is signed with it"},
            "head_height": {"type": "integer"}, "head_hash": {"type": "string"}, "head_slot": {"type": "integer"},
            "final_height": {"type": "integer"}, "final_hash": {"type": "string"},
            "round": {"type": "integer", "description": "The round the clock is in"},
            "delegate_seats": {"type": "integer"},
            "delegates": {"type": "array", "items": {"type": "string"}, "description": "Delegates of `round` in production order: the set the next block is checked against"},
            "finality_threshold": {"type": "integer"},
            "candidates": {"type": "array", "description": "Every candidate in election order (votes, then registration); the first delegate_seats form the next round's set", "items": {"type": "object", "properties": {
                "key": {"type": "string"}, "name": {"type": "string"},
                "votes": {"type": "integer", "description": "Stake-weighted votes in units (1 HP = 10^8 units)"},
                "votes_hp": {"type": "string"}, "delegate": {"type": "boolean", "description": "In the delegate set of `round`"}}}},
            "pending_txs": {"type": "integer"}, "equivocations": {"type": "integer"}}},
        "Account": {"type": "object", "properties": {
            "key": {"type": "string"}, "exists": {"type": "boolean", "description": "false for a key the chain has never seen"},
            "balance": {"type": "integer", "description": "Units (1 HP = 10^8 units)"},
            "balance_hp": {"type": "string", "description": "The balance in HP, exact"},
            "next_nonce": {"type": "integer", "description": "The nonce the account's next transaction must carry"},
            "votes": {"type": "array", "items": {"type": "string"}, "description": "Candidates it votes for; each receives its whole balance as weight"},
            "candidate": {"type": "object", "nullable": true, "description": "{name, votes, votes_hp, delegate} if the key is a delegate candidate"},
            "head_height": {"type": "integer"}, "final_height": {"type": "integer"}}},
        "SubmitTransaction": {"type": "object", "required": ["tx"], "additionalProperties": false, "properties": {
            "tx": {"type": "string", "description": "Hex of the signed transaction's canonical encoding (docs/ledger-format.md)"}}},
        "AuditRecord": {"type": "object", "properties": {
            "tx": {"type": "string", "description": "Transaction id; GET /v1/chain/proof/{tx} proves it"},
            "height": {"type": "integer"}, "index": {"type": "integer"}, "block": {"type": "string"},
            "final": {"type": "boolean", "description": "false while the block can still be replaced by a fork"},
            "at_ms": {"type": "integer"}, "time": {"type": "string", "description": "UTC, ISO 8601"},
            "node": {"type": "string", "description": "Who committed the change, e.g. node/1"},
            "signer": {"type": "string", "description": "The node's ledger key (hex)"},
            "action": {"type": "string", "description": "e.g. volume.create, volume.resize, volume.delete"},
            "target": {"type": "string", "description": "e.g. volume/demo"},
            "result": {"type": "string", "description": "ok, or the refusal's error code"},
            "details": {"type": "object", "additionalProperties": {"type": "string"}}}},
        "Block": {"type": "object", "properties": {
            "height": {"type": "integer"}, "hash": {"type": "string"}, "slot": {"type": "integer"},
            "timestamp_ms": {"type": "integer"}, "time": {"type": "string"}, "producer": {"type": "string"},
            "prev_hash": {"type": "string"}, "tx_root": {"type": "string"}, "tx_count": {"type": "integer"},
            "final": {"type": "boolean"}, "signature": {"type": "string"},
            "txs": {"type": "array", "items": {"type": "object", "properties": {
                "tx": {"type": "string"}, "index": {"type": "integer"}, "kind": {"type": "string"},
                "from": {"type": "string"}, "nonce": {"type": "integer"}, "payload": {"type": "object"}}}}}},
        "InclusionProof": {"type": "object", "description": "docs/ledger-format.md, Inclusion proof", "required": ["tx", "merkle", "header", "descendants", "confirmations"], "properties": {
            "tx": {"type": "object", "description": "The record, as signed by its sender"},
            "merkle": {"type": "object", "properties": {"index": {"type": "integer"}, "leaf_count": {"type": "integer"}, "siblings": {"type": "array", "items": {"type": "string"}}}},
            "header": {"type": "object", "description": "Signed header of the record's block"},
            "descendants": {"type": "array", "items": {"type": "object"}, "description": "Signed headers built on it, in height order"},
            "confirmations": {"type": "array", "items": {"type": "object"}},
            "tx_hash": {"type": "string"}, "tx_hex": {"type": "string", "description": "The record's canonical encoding"},
            "height": {"type": "integer"}, "block": {"type": "string"}, "chain_id": {"type": "string"},
            "final": {"type": "boolean", "description": "Final on the answering node (verify-proof decides for itself)"}}},
        "TraceWalk": {"type": "object", "properties": {
            "batch_id": {"type": "string"}, "direction": {"type": "string", "enum": ["upstream", "downstream"]},
            "ranges": {"type": "array", "items": {"type": "object"}}, "breaches": {"type": "integer", "description": "Readings outside a declared range"},
            "batches": {"type": "array", "items": {"type": "object", "properties": {
                "batch_id": {"type": "string"},
                "events": {"type": "array", "items": {"type": "object", "properties": {
                    "tx": {"type": "string"}, "height": {"type": "integer"}, "index": {"type": "integer"}, "block": {"type": "string"},
                    "proof": {"type": "string", "description": "Path of the event's inclusion proof"},
                    "time": {"type": "string"}, "event": {"$ref": "#/components/schemas/TraceEvent"},
                    "breaches": {"type": "array", "items": {"type": "object"}}}}}}}}}}
    })
}

fn snapshot_parameters() -> Value {
    json!([
        {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}, "description": "Volume name"},
        {"name": "snap", "in": "path", "required": true, "schema": {"type": "string"}, "description": "Snapshot name"}
    ])
}

fn steps_parameters(with_snapshot: bool) -> Value {
    let mut parameters = if with_snapshot {
        snapshot_parameters()
    } else {
        json!([{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}])
    };
    let list = parameters.as_array_mut().expect("array");
    list.push(json!({"name": "from_object", "in": "query", "required": false, "schema": {"type": "integer", "default": 0}, "description": "First object of this step"}));
    list.push(json!({"name": "objects", "in": "query", "required": false, "schema": {"type": "integer"}, "description": "Objects in this step; all of them when absent"}));
    parameters
}

/// Snapshots, clones, flatten, QoS and space.
fn snapshot_paths() -> Value {
    let no_content = json!({"description": "Done"});
    let usage_parameter = json!({"name": "usage", "in": "query", "required": false, "schema": {"type": "boolean"}, "description": "Also count exclusive and shared bytes (reads every object's versions)"});
    let mut show_parameters = snapshot_parameters();
    show_parameters
        .as_array_mut()
        .expect("array")
        .push(usage_parameter.clone());
    json!({
        "/v1/volumes/{name}/snapshots": {
            "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}, usage_parameter],
            "get": {"summary": "A volume's snapshots, oldest first", "responses": with_errors(json!({"200": json_list("Snapshot")}))},
            "post": {"summary": "Take a crash-consistent snapshot (one map commit, instant whatever the size)", "requestBody": request("CreateSnapshot"), "responses": with_errors(json!({"201": json_body("Snapshot")}))}
        },
        "/v1/volumes/{name}/snapshots/{snap}": {
            "parameters": show_parameters,
            "get": {"summary": "Show a snapshot", "responses": with_errors(json!({"200": json_body("Snapshot")}))},
            "delete": {"summary": "Remove a snapshot and free what only it held; 409 while protected or with clones", "responses": with_errors(json!({"204": no_content}))}
        },
        "/v1/volumes/{name}/snapshots/{snap}/protect": {
            "parameters": snapshot_parameters(),
            "post": {"summary": "Refuse removal of the snapshot until unprotected", "responses": with_errors(json!({"200": json_body("Snapshot")}))}
        },
        "/v1/volumes/{name}/snapshots/{snap}/unprotect": {
            "parameters": snapshot_parameters(),
            "post": {"summary": "Allow removal again; 409 while it has clones", "responses": with_errors(json!({"200": json_body("Snapshot")}))}
        },
        "/v1/volumes/{name}/snapshots/{snap}/rollback": {
            "parameters": steps_parameters(true),
            "post": {"summary": "Put the volume back as the snapshot saw it, in steps; the map records it (and the snapshot's size) when done", "responses": with_errors(json!({"200": json_body("Progress")}))}
        },
        "/v1/volumes/{name}/snapshots/{snap}/clone": {
            "parameters": snapshot_parameters(),
            "post": {"summary": "Create a writable clone of the snapshot, instantly", "requestBody": request("CloneVolume"), "responses": with_errors(json!({"201": json_body("Volume")}))}
        },
        "/v1/volumes/{name}/snapshots/{snap}/children": {
            "parameters": snapshot_parameters(),
            "get": {"summary": "The clones of the snapshot", "responses": with_errors(json!({"200": json_list("Volume")}))}
        },
        "/v1/volumes/{name}/snapshots/{snap}/data": {
            "parameters": [
                {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
                {"name": "snap", "in": "path", "required": true, "schema": {"type": "string"}},
                {"name": "offset", "in": "query", "required": true, "schema": {"type": "integer"}},
                {"name": "length", "in": "query", "required": true, "schema": {"type": "integer"}, "description": "At most 64 MiB"}
            ],
            "get": {"summary": "Read bytes of the snapshot", "responses": with_errors(json!({"200": {"description": "The bytes", "content": {"application/octet-stream": {}}}}))}
        },
        "/v1/volumes/{name}/snapshots/{snap}/iscsi": {
            "parameters": snapshot_parameters(),
            "get": {"summary": "The snapshot's iSCSI export (target iqn.2026-11.io.hpchain:<volume>:<snapshot>, read-only)", "responses": with_errors(json!({"200": json_body("IscsiExport")}))},
            "put": {"summary": "Export the snapshot read-only over iSCSI on every node's portal, or replace its CHAP and ACL settings",
                    "requestBody": {"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExportRequest"}}}},
                    "responses": with_errors(json!({"200": json_body("IscsiExport")}))},
            "delete": {"summary": "Stop exporting the snapshot; its sessions are dropped", "responses": with_errors(json!({"204": {"description": "Done"}}))}
        },
        "/v1/volumes/{name}/snapshots/{snap}/anchor": {
            "parameters": snapshot_parameters(),
            "post": {"summary": "Record the snapshot's content digest (Merkle root over the blake3 of each 4 KiB block) on the HP chain as an anchor transaction; reads the whole snapshot", "responses": with_errors(json!({"202": {"description": "{tx, volume, snapshot, digest, size_bytes, seconds}; final after a few slots"}}))}
        },
        "/v1/volumes/{name}/flatten": {
            "parameters": steps_parameters(false),
            "post": {"summary": "Copy what a clone still shares with its parent, in steps (resumable); the link is cut when done", "responses": with_errors(json!({"200": json_body("Progress")}))}
        },
        "/v1/volumes/{name}/qos": {
            "parameters": name_parameter("Volume"),
            "get": {"summary": "The volume's QoS limits, its pool's default and the limits in effect", "responses": with_errors(json!({"200": json_body("QosView")}))},
            "put": {"summary": "Replace the volume's QoS limits, live", "requestBody": request("QosLimits"), "responses": with_errors(json!({"200": json_body("QosView")}))}
        },
        "/v1/volumes/{name}/usage": {
            "parameters": name_parameter("Volume"),
            "get": {"summary": "Allocated, exclusive and shared bytes of the volume and each snapshot (once per version, not per replica)", "responses": with_errors(json!({"200": {"description": "SpaceUsage"}}))}
        },
        "/v1/pools/{name}/qos": {
            "parameters": name_parameter("Pool"),
            "put": {"summary": "Set the QoS default of the pool's volumes", "requestBody": request("QosLimits"), "responses": with_errors(json!({"200": {"description": "{pool, qos_default}"}}))}
        }
    })
}

fn snapshot_schemas() -> Value {
    let limit = json!({"type": "object", "properties": {
        "rate": {"type": "integer", "description": "Per second; 0 = no limit"},
        "burst": {"type": "integer", "description": "Peak rate per second while the burst lasts; 0 = none"},
        "burst_seconds": {"type": "integer", "description": "How long the peak may last; 0 = 1 s"}}});
    json!({
        "Snapshot": {"type": "object", "properties": {
            "id": {"type": "integer"}, "name": {"type": "string"}, "volume": {"type": "string"},
            "size_bytes": {"type": "integer"}, "created_epoch": {"type": "integer"},
            "created_ms": {"type": "integer", "description": "When it was taken, ms since the Unix epoch"},
            "protected": {"type": "boolean"},
            "children": {"type": "array", "items": {"type": "string"}, "description": "Clones of this snapshot"},
            "allocated_bytes": {"type": "integer", "description": "With ?usage=true"},
            "exclusive_bytes": {"type": "integer", "description": "Held for this snapshot alone (with ?usage=true)"},
            "shared_bytes": {"type": "integer", "description": "Also read by the volume or another snapshot (with ?usage=true)"}}},
        "CreateSnapshot": {"type": "object", "required": ["name"], "additionalProperties": false, "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9._-]{1,64}$"}}},
        "CloneVolume": {"type": "object", "required": ["name"], "additionalProperties": false, "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9._-]{1,64}$"},
            "qos": {"$ref": "#/components/schemas/QosLimits"}}},
        "Progress": {"type": "object", "properties": {
            "next_object": {"type": "integer"}, "total_objects": {"type": "integer"}, "done": {"type": "boolean"}}},
        "QosLimits": {"type": "object", "additionalProperties": false, "properties": {
            "total_iops": limit, "read_iops": limit, "write_iops": limit,
            "total_bps": limit, "read_bps": limit, "write_bps": limit}},
        "QosView": {"type": "object", "properties": {
            "volume": {"$ref": "#/components/schemas/QosLimits"},
            "pool_default": {"$ref": "#/components/schemas/QosLimits"},
            "effective": {"$ref": "#/components/schemas/QosLimits"}}}
    })
}

/// Scrub and repair of a volume's blocks.
fn integrity_paths() -> Value {
    json!({
        "/v1/volumes/{name}/scrub": {
            "parameters": steps_parameters(false),
            "post": {"summary": "Check every block of every version (head and snapshot clones) of the volume's objects against its recorded crc32c, on every replica, and rewrite each bad block with another replica's copy whose crc32c matches the record; in steps (resumable). A block no replica holds a good copy of is listed under `unrepaired`",
                "responses": with_errors(json!({"200": json_body("ScrubStep")}))}
        }
    })
}

fn integrity_schemas() -> Value {
    let finding = json!({"type": "object", "properties": {
        "object": {"type": "integer"},
        "version": {"type": "string", "description": "`head`, or `clone@SEQ` for a version kept for snapshots"},
        "block": {"type": "integer", "description": "4 KiB block of the object"},
        "volume_offset": {"type": "integer", "description": "Where the block lies in the volume (or in the snapshots reading that version)"},
        "node": {"type": "integer", "description": "The replica the block was bad on"},
        "disk": {"type": "integer"},
        "from_node": {"type": "integer", "description": "Repaired: the replica the good copy came from (absent: the block had to be zero)"},
        "from_disk": {"type": "integer"},
        "recorded_crc": {"type": "string", "description": "Not repaired: the crc32c recorded for the block"},
        "actual_crc": {"type": "string", "description": "Not repaired: the crc32c of what the disk holds"},
        "reason": {"type": "string", "description": "Not repaired: what each other replica offered"},
        "lost": {"type": "boolean", "description": "Not repaired: every other replica sent a copy and none matched the record, so the data is lost (false: no copy could be fetched now; scrub again later)"}}});
    let replica = json!({"type": "object", "properties": {
        "node": {"type": "integer"}, "disk": {"type": "integer"},
        "objects": {"type": "integer"}, "reason": {"type": "string"}}});
    json!({
        "ScrubStep": {"type": "object", "properties": {
            "next_object": {"type": "integer"}, "total_objects": {"type": "integer"}, "done": {"type": "boolean"},
            "objects_checked": {"type": "integer", "description": "Objects of this step, each checked on every replica that answered"},
            "versions_checked": {"type": "integer", "description": "Object versions (heads and clones) found, over all replicas"},
            "blocks_checked": {"type": "integer"},
            "blocks_bad": {"type": "integer"},
            "blocks_repaired": {"type": "integer"},
            "blocks_unrepaired": {"type": "integer"},
            "objects_failed": {"type": "integer", "description": "Object replicas whose check failed (I/O or metadata error), listed in `failed`"},
            "repaired": {"type": "array", "items": finding.clone(), "description": "At most 1000 per step"},
            "unrepaired": {"type": "array", "items": finding, "description": "At most 1000 per step"},
            "failed": {"type": "array", "items": replica.clone()},
            "skipped": {"type": "array", "items": replica.clone(), "description": "Replicas whose node did not answer: not checked"},
            "objects_compared": {"type": "integer", "description": "Objects whose blake3 digests at least two replicas gave, taken at the same entry of the PG's Raft log"},
            "objects_differing": {"type": "integer", "description": "Objects on which some replica's digest differs from the others'"},
            "differing": {"type": "array", "description": "At most 1000 per step", "items": {"type": "object", "properties": {
                "object": {"type": "integer"}, "node": {"type": "integer"}, "disk": {"type": "integer"},
                "agreeing": {"type": "array", "items": {"type": "string"}, "description": "The replicas that agree with each other (`node N disk D`); empty when no two agree"},
                "reason": {"type": "string"}}}},
            "compare_skipped": {"type": "array", "items": replica, "description": "Replicas whose digests could not be had: not compared"}}}
    })
}

/// One trace event, or a batch of them in order.
fn trace_body_schema() -> Value {
    json!({"oneOf": [
        {"$ref": "#/components/schemas/TraceEvent"},
        {"type": "object", "required": ["events"], "properties": {"events": {
            "type": "array", "maxItems": 10000,
            "items": {"$ref": "#/components/schemas/TraceEvent"}}}}
    ]})
}

/// The document.
pub fn document() -> Value {
    let no_content = json!({"description": "Done"});
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "hpchain management API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Pools, volumes, cluster status, and the HP chain (blocks, inclusion proofs, audit records, traceability) of an hpchain cluster. Every node serves the same API; changes go through the cluster map's Raft group. Authenticate with `Authorization: Bearer <token>` (the token is created at bootstrap in the api-token file)."
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/health": {"get": {"summary": "Liveness of this node", "security": [], "responses": {"200": {"description": "OK"}}}},
            "/v1/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OK"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics of this node", "security": [], "responses": {"200": {"description": "text/plain; version=0.0.4"}}}},
            "/v1/cluster": {"get": {"summary": "Cluster status: epoch, map leader, nodes", "responses": with_errors(json!({"200": json_body("ClusterStatus")}))}},
            "/v1/nodes": {"get": {"summary": "Nodes in the cluster map", "responses": with_errors(json!({"200": json_list("Node")}))}},
            "/v1/pools": {
                "get": {"summary": "List pools", "responses": with_errors(json!({"200": json_list("Pool")}))},
                "post": {"summary": "Create a pool", "requestBody": request("CreatePool"), "responses": with_errors(json!({"201": json_body("Pool")}))}
            },
            "/v1/pools/{name}": {
                "parameters": name_parameter("Pool"),
                "get": {"summary": "Show a pool", "responses": with_errors(json!({"200": json_body("Pool")}))},
                "delete": {"summary": "Delete an empty pool", "responses": with_errors(json!({"204": no_content}))}
            },
            "/v1/volumes": {
                "get": {"summary": "List volumes", "responses": with_errors(json!({"200": json_list("Volume")}))},
                "post": {"summary": "Create a thin volume", "requestBody": request("CreateVolume"), "responses": with_errors(json!({"201": json_body("Volume")}))}
            },
            "/v1/volumes/{name}/data": {
                "parameters": [
                    {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "offset", "in": "query", "required": true, "schema": {"type": "integer"}, "description": "Byte offset"},
                    {"name": "length", "in": "query", "required": false, "schema": {"type": "integer"}, "description": "Bytes to read (required for GET; at most 64 MiB)"}
                ],
                "get": {"summary": "Read bytes of a volume (linearizable)", "responses": with_errors(json!({"200": {"description": "The bytes", "content": {"application/octet-stream": {}}}}))},
                "put": {"summary": "Write bytes to a volume; 204 once durable on a majority of replicas",
                        "requestBody": {"required": true, "content": {"application/octet-stream": {}}},
                        "responses": with_errors(json!({"204": no_content}))}
            },
            "/v1/volumes/{name}/discard": {
                "parameters": name_parameter("Volume"),
                "post": {"summary": "Discard (zero and release) a byte range", "requestBody": request("DiscardRange"), "responses": with_errors(json!({"204": no_content}))}
            },
            "/v1/volumes/{name}/bench": {
                "parameters": name_parameter("Volume"),
                "post": {"summary": "Run a load (randwrite, randread, write, read) through the volume client inside this node; OVERWRITES the volume's data",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object",
                        "required": ["pattern", "block_size_bytes", "queue_depth", "seconds"],
                        "properties": {"pattern": {"type": "string", "enum": ["randwrite", "randread", "write", "read"]},
                            "block_size_bytes": {"type": "integer"}, "queue_depth": {"type": "integer", "maximum": 256},
                            "once": {"type": "boolean", "description": "sequential patterns: stop after one pass over the volume"},
                            "seconds": {"type": "integer", "maximum": 120}}}}}},
                    "responses": with_errors(json!({"200": {"description": "iops, bytes_per_second, latency_us_p50/p99/max"}}))}
            },
            "/v1/volumes/{name}/iscsi": {
                "parameters": name_parameter("Volume"),
                "get": {"summary": "The volume's iSCSI export: target, portals of every node that is up, URLs (secrets are never returned)", "responses": with_errors(json!({"200": json_body("IscsiExport")}))},
                "put": {"summary": "Export the volume over iSCSI on every node's portal, or replace its CHAP and ACL settings",
                        "requestBody": {"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExportRequest"}}}},
                        "responses": with_errors(json!({"200": json_body("IscsiExport")}))},
                "delete": {"summary": "Stop exporting the volume; its sessions are dropped", "responses": with_errors(json!({"204": no_content}))}
            },
            "/v1/iscsi": {"get": {"summary": "Every iSCSI export", "responses": with_errors(json!({"200": json_list("IscsiExport")}))}},
            "/v1/chain": {"get": {"summary": "HP chain status: chain hash, head, final block, the current round's delegates, candidates with their votes", "responses": with_errors(json!({"200": json_body("ChainStatus")}))}},
            "/v1/chain/audit": {
                "parameters": [{"name": "target", "in": "query", "required": true, "schema": {"type": "string"}, "description": "e.g. volume/demo, pool/rbd, node/1"}],
                "get": {"summary": "Final audit records of a target", "responses": with_errors(json!({"200": {"description": "Records with their block height and signer"}}))}
            },
            "/v1/pgs": {"get": {"summary": "Every placement group's state (active+clean, active+recovering, active+degraded, inactive) with its leader and each replica's node, liveness and lag",
                "parameters": [{"name": "pool", "in": "query", "required": false, "schema": {"type": "string"}}],
                "responses": with_errors(json!({"200": {"description": "{summary: {state: count}, pgs: [...]}"}}))}},
            "/v1/chain/verify": {"get": {"summary": "Re-check the whole ledger; names the first block that does not verify. Damage found makes the node serve and build on nothing from it, and is repaired from peers when auto_repair is on", "responses": with_errors(json!({"200": {"description": "Report"}}))}},
            "/v1/chain/repair": {"post": {"summary": "Verify the stored ledger and repair it: index entries and state from this node's own replay, damaged blocks from a peer whose copies hash to what this node made final", "responses": with_errors(json!({"200": {"description": "{found, repairs, ok}"}, "503": {"description": "No peer could repair the damage"}}))}},
            "/v1/trace": {"post": {"summary": "Record a supply-chain event, or up to 10,000 in order as {\"events\": [...]} (signed by this node; final after a few slots)",
                "requestBody": {"required": true, "content": {"application/json": {"schema": trace_body_schema()}}},
                "responses": with_errors(json!({"202": {"description": "{\"tx\": hash} for one event, {\"txs\": [hash]} for a batch"}}))}},
            "/v1/trace/{batch}": {
                "parameters": [{"name": "batch", "in": "path", "required": true, "schema": {"type": "string"}}],
                "get": {"summary": "A batch's final events, and every batch upstream (its inputs) and downstream (made from it)", "responses": with_errors(json!({"200": {"description": "History"}}))}
            },
            "/v1/volumes/{name}": {
                "parameters": name_parameter("Volume"),
                "get": {"summary": "Show a volume", "responses": with_errors(json!({"200": json_body("Volume")}))},
                "patch": {"summary": "Grow a volume, or shrink it with allow_shrink (the tail is discarded)", "requestBody": request("ResizeVolume"), "responses": with_errors(json!({"200": json_body("Volume")}))},
                "delete": {"summary": "Delete a volume and free its objects; 409 while it has snapshots or is exported", "responses": with_errors(json!({"204": no_content}))}
            }
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "Error": {"description": "An error naming the object, the reason and the fix", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string", "description": "Stable code, e.g. volume.exists, pool.not_found"},
                    "message": {"type": "string"}}}}},
                "ClusterStatus": {"type": "object", "properties": {
                    "epoch": {"type": "integer"}, "map_leader": {"type": "integer", "nullable": true},
                    "answered_by": {"type": "integer"},
                    "nodes": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}},
                    "pools": {"type": "integer"}, "volumes": {"type": "integer"},
                    "pgs": {"type": "object", "description": "Placement groups by state (active+clean, active+recovering, active+degraded, inactive)", "additionalProperties": {"type": "integer"}}}},
                "Node": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "name": {"type": "string"}, "peer_addr": {"type": "string"},
                    "api_addr": {"type": "string"}, "iscsi_addr": {"type": "string"}, "host": {"type": "string"},
                    "rack": {"type": "string"}, "zone": {"type": "string"}, "up": {"type": "boolean"},
                    "disks": {"type": "array", "items": {"type": "object", "properties": {
                        "id": {"type": "integer"}, "path": {"type": "string"}, "weight": {"type": "number"}, "is_in": {"type": "boolean"}}}}}},
                "Pool": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "name": {"type": "string"}, "size": {"type": "integer"},
                    "min_size": {"type": "integer"}, "pg_num": {"type": "integer"},
                    "failure_domain": {"type": "string", "enum": ["disk", "host", "rack", "zone"]},
                    "object_size_bytes": {"type": "integer"}, "volumes": {"type": "integer"},
                    "qos_default": {"$ref": "#/components/schemas/QosLimits"},
                    "capacity": {"type": "object", "description": "GET /v1/pools/{name} only: raw_bytes and raw_available_bytes of every node's disks, bytes and available_bytes over the replica count, provisioned_bytes (sum of its volumes' sizes), nodes_missing (nodes that did not answer within a second)"}}},
                "CreatePool": {"type": "object", "required": ["name"], "additionalProperties": false, "properties": {
                    "name": {"type": "string", "pattern": "^[a-z0-9._-]{1,64}$"},
                    "size": {"type": "integer", "default": 3, "minimum": 1, "maximum": 16},
                    "min_size": {"type": "integer", "default": 2},
                    "pg_num": {"type": "integer", "default": 64, "description": "A power of two"},
                    "failure_domain": {"type": "string", "enum": ["disk", "host", "rack", "zone"], "default": "host"},
                    "object_size_bytes": {"type": "integer", "default": 4194304}}},
                "Volume": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "name": {"type": "string"}, "pool": {"type": "string"},
                    "size_bytes": {"type": "integer"}, "block_size": {"type": "integer", "enum": [512, 4096]},
                    "allocated_bytes": {"type": "integer", "description": "Per replica (GET /v1/volumes/{name} only)"},
                    "allocated_bytes_all_replicas": {"type": "integer", "description": "Summed over every replica on the nodes that answered (GET /v1/volumes/{name} only)"},
                    "allocated_nodes_missing": {"type": "array", "items": {"type": "integer"}, "description": "Nodes that did not answer; allocated_bytes is then an estimate"},
                    "created_epoch": {"type": "integer"},
                    "iscsi": {"nullable": true, "allOf": [{"$ref": "#/components/schemas/IscsiExport"}]},
                    "snapshots": {"type": "integer", "description": "How many snapshots it has"},
                    "parent": {"type": "object", "nullable": true, "description": "For a clone: {volume, snapshot, overlap_bytes}"},
                    "qos": {"description": "Its own limits (QosLimits); GET /v1/volumes/{name} shows {volume, pool_default, effective}"}}},
                "IscsiExport": {"type": "object", "properties": {
                    "target": {"type": "string", "description": "iqn.2026-11.io.hpchain:<volume>"},
                    "lun": {"type": "integer"},
                    "chap_user": {"type": "string", "nullable": true},
                    "mutual_chap_user": {"type": "string", "nullable": true},
                    "allowed_initiators": {"type": "array", "items": {"type": "string"}, "description": "Empty allows any initiator"},
                    "read_only": {"type": "boolean"},
                    "portals": {"type": "array", "items": {"type": "string"}, "description": "host:port of every node that is up"},
                    "urls": {"type": "array", "items": {"type": "string"}, "description": "iscsi://portal/target/0"}}},
                "ExportRequest": {"type": "object", "additionalProperties": false, "properties": {
                    "chap_user": {"type": "string"}, "chap_secret": {"type": "string", "minLength": 12},
                    "mutual_chap_user": {"type": "string"}, "mutual_chap_secret": {"type": "string", "minLength": 12},
                    "allowed_initiators": {"type": "array", "items": {"type": "string"}},
                    "read_only": {"type": "boolean", "default": false}}},
                "CreateVolume": {"type": "object", "required": ["name", "pool", "size_bytes"], "additionalProperties": false, "properties": {
                    "name": {"type": "string", "pattern": "^[a-z0-9._-]{1,64}$"}, "pool": {"type": "string"},
                    "size_bytes": {"type": "integer", "description": "A multiple of block_size"},
                    "block_size": {"type": "integer", "enum": [512, 4096], "default": 512},
                    "qos": {"$ref": "#/components/schemas/QosLimits"}}},
                "DiscardRange": {"type": "object", "required": ["offset_bytes", "length_bytes"], "additionalProperties": false, "properties": {
                    "offset_bytes": {"type": "integer"}, "length_bytes": {"type": "integer"}}},
                "TraceEvent": {"type": "object", "required": ["batch_id", "stage", "actor", "place", "at_ms", "readings", "documents", "inputs"], "properties": {
                    "batch_id": {"type": "string"},
                    "stage": {"description": "farm, processing, cold-storage, logistics, retail, or {\"other\": name}"},
                    "actor": {"type": "string"}, "place": {"type": "string"},
                    "at_ms": {"type": "integer", "description": "ms since the Unix epoch"},
                    "readings": {"type": "array", "items": {"type": "object", "properties": {
                        "name": {"type": "string"}, "value_milli": {"type": "integer", "description": "value x 1000"}, "unit": {"type": "string"}}}},
                    "documents": {"type": "array", "items": {"type": "string", "description": "blake3 hex digest"}},
                    "inputs": {"type": "array", "items": {"type": "string"}, "description": "batches this one was made from"}}},
                "ResizeVolume": {"type": "object", "required": ["size_bytes"], "additionalProperties": false, "properties": {
                    "size_bytes": {"type": "integer", "description": "Not smaller than the current size unless allow_shrink"},
                    "allow_shrink": {"type": "boolean", "default": false, "description": "Shrinking discards the tail"}}}
            }
        }
    });
    for (path, item) in chain_paths().as_object().expect("object") {
        doc["paths"][path] = item.clone();
    }
    for (name, schema) in chain_schemas().as_object().expect("object") {
        doc["components"]["schemas"][name] = schema.clone();
    }
    for (path, item) in snapshot_paths().as_object().expect("object") {
        doc["paths"][path] = item.clone();
    }
    for (name, schema) in snapshot_schemas().as_object().expect("object") {
        doc["components"]["schemas"][name] = schema.clone();
    }
    for (path, item) in integrity_paths().as_object().expect("object") {
        doc["paths"][path] = item.clone();
    }
    for (name, schema) in integrity_schemas().as_object().expect("object") {
        doc["components"]["schemas"][name] = schema.clone();
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::document;

    /// Routes and methods as `router()` registers them (kept next to the
    /// router by this test: a route added there and not here fails).
    const ROUTES: &[(&str, &[&str])] = &[
        ("/v1/health", &["get"]),
        ("/v1/openapi.json", &["get"]),
        ("/metrics", &["get"]),
        ("/v1/cluster", &["get"]),
        ("/v1/nodes", &["get"]),
        ("/v1/pools", &["get", "post"]),
        ("/v1/pools/{name}", &["get", "delete"]),
        ("/v1/volumes", &["get", "post"]),
        ("/v1/volumes/{name}", &["get", "patch", "delete"]),
        ("/v1/volumes/{name}/data", &["get", "put"]),
        ("/v1/volumes/{name}/discard", &["post"]),
        ("/v1/volumes/{name}/bench", &["post"]),
        ("/v1/volumes/{name}/iscsi", &["get", "put", "delete"]),
        ("/v1/iscsi", &["get"]),
        ("/v1/chain", &["get"]),
        ("/v1/chain/audit", &["get"]),
        ("/v1/pgs", &["get"]),
        ("/v1/chain/verify", &["get"]),
        ("/v1/chain/repair", &["post"]),
        ("/v1/trace", &["post"]),
        ("/v1/trace/{batch}", &["get"]),
        ("/v1/chain/blocks", &["get"]),
        ("/v1/chain/blocks/{id}", &["get"]),
        ("/v1/chain/proof/{tx}", &["get"]),
        ("/v1/chain/accounts/{key}", &["get"]),
        ("/v1/chain/transactions", &["post"]),
        ("/v1/audit", &["get"]),
        ("/v1/trace/{batch}/upstream", &["get"]),
        ("/v1/trace/{batch}/downstream", &["get"]),
        ("/v1/volumes/{name}/snapshots", &["get", "post"]),
        ("/v1/volumes/{name}/snapshots/{snap}", &["get", "delete"]),
        ("/v1/volumes/{name}/snapshots/{snap}/protect", &["post"]),
        ("/v1/volumes/{name}/snapshots/{snap}/unprotect", &["post"]),
        ("/v1/volumes/{name}/snapshots/{snap}/rollback", &["post"]),
        ("/v1/volumes/{name}/snapshots/{snap}/clone", &["post"]),
        ("/v1/volumes/{name}/snapshots/{snap}/children", &["get"]),
        ("/v1/volumes/{name}/snapshots/{snap}/data", &["get"]),
        (
            "/v1/volumes/{name}/snapshots/{snap}/iscsi",
            &["get", "put", "delete"],
        ),
        ("/v1/volumes/{name}/snapshots/{snap}/anchor", &["post"]),
        ("/v1/volumes/{name}/flatten", &["post"]),
        ("/v1/volumes/{name}/scrub", &["post"]),
        ("/v1/volumes/{name}/qos", &["get", "put"]),
        ("/v1/volumes/{name}/usage", &["get"]),
        ("/v1/pools/{name}/qos", &["put"]),
    ];

    #[test]
    fn the_document_lists_exactly_the_routes_of_the_router() {
        let source = include_str!("mod.rs");
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), ROUTES.len());
        for (path, methods) in ROUTES {
            let axum_path = path
                .replace("{name}", ":name")
                .replace("{batch}", ":batch")
                .replace("{id}", ":id")
                .replace("{tx}", ":tx")
                .replace("{key}", ":key")
                .replace("{snap}", ":snap");
            assert!(
                source.contains(&format!("\"{axum_path}\"")),
                "router lacks {path}"
            );
            let item = paths
                .get(*path)
                .unwrap_or_else(|| panic!("document lacks {path}"));
            let documented: Vec<&String> = item
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "parameters")
                .collect();
            assert_eq!(documented.len(), methods.len(), "{path}: {documented:?}");
            for m in *methods {
                assert!(item.get(*m).is_some(), "{path} lacks {m}");
            }
        }
    }

    /// The reverse: every path the router registers is in ROUTES.
    #[test]
    fn every_router_path_is_documented() {
        let source = include_str!("mod.rs");
        for piece in source.split(".route(").skip(1) {
            let start = piece.find('"').unwrap() + 1;
            let path = &piece[start..start + piece[start..].find('"').unwrap()];
            let openapi_path = path
                .split('/')
                .map(|part| match part.strip_prefix(':') {
                    Some(name) => format!("{{{name}}}"),
                    None => part.to_string(),
                })
                .collect::<Vec<_>>()
                .join("/");
            assert!(
                ROUTES.iter().any(|(p, _)| *p == openapi_path),
                "router path {path} is not in ROUTES or the document"
            );
        }
    }

    #[test]
    fn every_schema_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"").skip(1) {
            let reference = &piece[..piece.find('"').unwrap()];
            let pointer = reference.trim_start_matches('#');
            assert!(doc.pointer(pointer).is_some(), "dangling {reference}");
        }
    }
}
