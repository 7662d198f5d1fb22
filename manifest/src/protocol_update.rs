//! The control requests for OS updates (`sysctr update`, `sysctr update status`,
//! `sysctr rollback`) and their answers. They use the framing of [`crate::protocol`] and
//! the same `{"version": 1, "op": …}` shape, with op names no [`crate::protocol::Op`] has,
//! so PID 1 decodes a frame as a [`crate::protocol::Request`] first and as an
//! [`UpdateRequest`] when that fails (or adds these variants to `Op` under the same names).
//!
//! `update` passes the bundle as one file descriptor (SCM_RIGHTS) with the request frame: a
//! regular file (`sysctr update FILE`, or `-` redirected from one) or a pipe (`ssh … sysctr
//! update - < os.bundle`). PID 1 answers with [`UpdateReply::UpdateProgress`] frames, then
//! one [`UpdateReply::UpdateDone`] or [`UpdateReply::Error`].

use crate::protocol::{ErrorKind, PROTOCOL_VERSION};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateRequest {
    /// Must be [`PROTOCOL_VERSION`].
    pub version: u32,
    #[serde(flatten)]
    pub op: UpdateOp,
}

impl UpdateRequest {
    pub fn new(op: UpdateOp) -> Self {
        UpdateRequest {
            version: PROTOCOL_VERSION,
            op,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum UpdateOp {
    /// Install the bundle passed as the frame's one file descriptor into the inactive slot.
    Update {
        /// Install an older version (or the same one again).
        #[serde(default)]
        allow_downgrade: bool,
        /// Reboot into the new slot once it is installed.
        #[serde(default)]
        reboot: bool,
    },
    UpdateStatus {},
    /// Make the other good slot the one the next boot takes.
    Rollback {},
}

impl UpdateOp {
    /// Whether the request only reads state (allowed for the `sysctr` group).
    pub fn is_read_only(&self) -> bool {
        matches!(self, UpdateOp::UpdateStatus {})
    }

    /// How many file descriptors PID 1 expects with the frame.
    pub fn fds(&self) -> usize {
        match self {
            UpdateOp::Update { .. } => 1,
            _ => 0,
        }
    }
}

pub fn decode_update_request(body: &[u8]) -> Result<UpdateRequest, serde_json::Error> {
    serde_json::from_slice(body)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The steps of an install, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Signature, `compatible`, version: nothing written yet.
    Verifying,
    /// A seekable bundle's payloads hashed before anything is written.
    CheckingPayloads,
    /// The root payload streamed into the inactive slot.
    WritingSlot,
    /// The written slot read back: sha256 and dm-verity root hash.
    VerifyingSlot,
    /// The UKI written to the ESP under a temporary name.
    WritingUki,
    /// The boot entry renamed into place as the newest generation.
    Activating,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Verifying => "verifying",
            Phase::CheckingPayloads => "checking payloads",
            Phase::WritingSlot => "writing slot",
            Phase::VerifyingSlot => "verifying slot",
            Phase::WritingUki => "writing UKI",
            Phase::Activating => "activating",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub phase: Phase,
    /// Bytes done and total in this phase (0/0 for phases without bytes).
    pub done: u64,
    pub total: u64,
}

/// What a finished install made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    pub version: String,
    pub slot: Slot,
    /// The boot entry's file, relative to the ESP (`EFI/Linux/sysctr-g2-b+3.efi`).
    pub entry: String,
    /// The id of the key that signed the bundle.
    pub key_id: String,
    /// Whether PID 1 is rebooting into it now.
    pub rebooting: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotState {
    /// Blessed: booted and passed the health gate (its entry has no boot counter).
    Good,
    /// Out of tries or marked bad by the health gate (`+0-N`).
    Bad,
    /// Installed, tries left, not blessed yet (`+N` or `+N-M`, N > 0).
    Trial,
    /// No boot entry.
    Empty,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotStatus {
    pub slot: Slot,
    pub version: Option<String>,
    pub state: SlotState,
    pub tries_left: Option<u32>,
    pub tries_done: Option<u32>,
    /// Whether systemd-boot boots this slot next (its entry has the highest generation
    /// among those with tries left).
    pub next_boot: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateResult {
    Installed,
    Refused,
    Failed,
    Blessed,
    RolledBack,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastUpdate {
    pub version: Option<String>,
    pub slot: Option<Slot>,
    pub result: UpdateResult,
    pub reason: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    pub booted: Option<Slot>,
    pub compatible: Option<String>,
    pub slots: Vec<SlotStatus>,
    pub last: Option<LastUpdate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum UpdateReply {
    UpdateProgress {
        progress: Progress,
    },
    UpdateDone {
        installed: Installed,
    },
    UpdateStatus {
        status: UpdateStatus,
    },
    /// Also `rollback`'s answer.
    Ok {
        message: String,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
    End,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode_request, encode, read_frame, MAX_REQUEST_BYTES};

    #[test]
    fn update_requests_are_frames_the_general_decoder_refuses() {
        let req = UpdateRequest::new(UpdateOp::Update {
            allow_downgrade: true,
            reboot: false,
        });
        let frame = encode(&req);
        let body = read_frame(&mut &frame[..], MAX_REQUEST_BYTES)
            .unwrap()
            .unwrap();
        let text = String::from_utf8(body.clone()).unwrap();
        assert!(text.contains(r#""op":"update""#), "{text}");
        assert_eq!(decode_update_request(&body).unwrap(), req);
        assert!(
            decode_request(&body).is_err(),
            "protocol::Op must not take {text}"
        );
        for op in [r#""update_status""#, r#""rollback""#] {
            let body = format!(r#"{{"version":1,"op":{op}}}"#);
            assert!(decode_update_request(body.as_bytes()).is_ok());
            assert!(decode_request(body.as_bytes()).is_err());
        }
        assert!(decode_update_request(br#"{"version":1,"op":"rollback","x":1}"#).is_err());
        assert!(decode_update_request(br#"{"version":1,"op":"ps"}"#).is_err());
        assert!(UpdateOp::UpdateStatus {}.is_read_only());
        assert!(!UpdateOp::Rollback {}.is_read_only());
    }

    #[test]
    fn replies_round_trip_and_generic_errors_decode() {
        let reply = UpdateReply::UpdateProgress {
            progress: Progress {
                phase: Phase::WritingSlot,
                done: 10,
                total: 20,
            },
        };
        let json = serde_json::to_string(&reply).unwrap();
        assert!(json.contains(r#""phase":"writing_slot""#), "{json}");
        assert_eq!(serde_json::from_str::<UpdateReply>(&json).unwrap(), reply);
        // What an init without update support answers is still readable.
        let generic = encode(&crate::protocol::Response::Error {
            kind: ErrorKind::BadRequest,
            message: "unknown op".into(),
        });
        let parsed: UpdateReply = serde_json::from_slice(&generic[4..]).unwrap();
        assert!(matches!(
            parsed,
            UpdateReply::Error {
                kind: ErrorKind::BadRequest,
                ..
            }
        ));
    }
}
