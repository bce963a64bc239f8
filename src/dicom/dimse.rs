//! DIMSE command sets: decoding the requests we serve and encoding their responses.
//!
//! Command sets are always Implicit VR Little Endian (PS3.7 §6.3.1). Only C-ECHO and
//! C-STORE are served; anything else is reported as [`Command::Other`] and the
//! association handler decides what to do with it. This module never touches sockets.

use dicom_core::{DataElement, PrimitiveValue, VR, dicom_value};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

/// C-STORE-RQ command field.
pub const C_STORE_RQ: u16 = 0x0001;
/// C-STORE-RSP command field.
pub const C_STORE_RSP: u16 = 0x8001;
/// C-ECHO-RQ command field.
pub const C_ECHO_RQ: u16 = 0x0030;
/// C-ECHO-RSP command field.
pub const C_ECHO_RSP: u16 = 0x8030;
/// C-CANCEL-RQ command field.
pub const C_CANCEL_RQ: u16 = 0x0FFF;
/// Command Data Set Type meaning "no data set follows".
pub const NO_DATA_SET: u16 = 0x0101;

/// DIMSE status codes used by this receiver (PS3.4 Annex B.2.3, PS3.7 Annex C).
pub mod status {
    /// Success.
    pub const SUCCESS: u16 = 0x0000;
    /// Refused: out of resources (disk floor reached, instance over the size cap).
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: data set does not match SOP class (missing identifying attributes, mismatch
    /// with the command).
    pub const DATA_SET_MISMATCH: u16 = 0xA900;
    /// Error: cannot understand (the data set does not parse).
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Failure: SOP class not supported on this presentation context.
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    /// Failure: processing failure (an internal error on our side).
    pub const PROCESSING_FAILURE: u16 = 0x0110;
}

/// A decoded request command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// C-ECHO-RQ.
    Echo {
        /// Message ID to echo back.
        message_id: u16,
    },
    /// C-STORE-RQ.
    Store {
        /// Message ID to answer.
        message_id: u16,
        /// Affected SOP Class UID.
        sop_class_uid: String,
        /// Affected SOP Instance UID.
        sop_instance_uid: String,
        /// Whether a data set follows (it must, for a store).
        has_data_set: bool,
    },
    /// C-CANCEL-RQ (no response is due).
    Cancel {
        /// The message it would cancel.
        message_id_being_responded_to: u16,
    },
    /// Any other command; we do not serve it.
    Other {
        /// Its command field.
        command_field: u16,
        /// Its message ID, if readable.
        message_id: u16,
        /// Whether a data set follows.
        has_data_set: bool,
    },
}

/// Why a command set could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The bytes are not an Implicit VR LE data set.
    #[error("command set does not parse: {0}")]
    Parse(String),
    /// A required command element is missing or of the wrong type.
    #[error("command set lacks a valid {0}")]
    Missing(&'static str),
}

fn get_u16(
    obj: &InMemDicomObject,
    tag: dicom_core::Tag,
    name: &'static str,
) -> Result<u16, CommandError> {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_int::<u16>().ok())
        .ok_or(CommandError::Missing(name))
}

fn get_uid(
    obj: &InMemDicomObject,
    tag: dicom_core::Tag,
    name: &'static str,
) -> Result<String, CommandError> {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .filter(|s| !s.is_empty())
        .ok_or(CommandError::Missing(name))
}

/// Decode a command set.
///
/// The bytes come from the peer: their structure is walked first (see `prescan`) so that a
/// forged length cannot make the parser allocate what it claims, and a parser panic is
/// caught.
pub fn decode(bytes: &[u8]) -> Result<Command, CommandError> {
    let implicit = super::prescan::Encoding::of("1.2.840.10008.1.2");
    super::prescan::check(
        bytes,
        implicit,
        Some(bytes.len() as u64),
        bytes.len() as u64,
    )
    .map_err(|e| CommandError::Parse(e.to_string()))?;
    let obj = std::panic::catch_unwind(|| {
        InMemDicomObject::read_dataset_with_ts(bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
    })
    .map_err(|_| CommandError::Parse("the command parser panicked".into()))?
    .map_err(|e| CommandError::Parse(e.to_string()))?;
    let command_field = get_u16(&obj, tags::COMMAND_FIELD, "Command Field")?;
    let message_id = get_u16(&obj, tags::MESSAGE_ID, "Message ID");
    let has_data_set = get_u16(&obj, tags::COMMAND_DATA_SET_TYPE, "Command Data Set Type")
        .map(|v| v != NO_DATA_SET)
        .unwrap_or(false);
    match command_field {
        C_ECHO_RQ => Ok(Command::Echo {
            message_id: message_id?,
        }),
        C_STORE_RQ => Ok(Command::Store {
            message_id: message_id?,
            sop_class_uid: get_uid(&obj, tags::AFFECTED_SOP_CLASS_UID, "Affected SOP Class UID")?,
            sop_instance_uid: get_uid(
                &obj,
                tags::AFFECTED_SOP_INSTANCE_UID,
                "Affected SOP Instance UID",
            )?,
            has_data_set,
        }),
        C_CANCEL_RQ => Ok(Command::Cancel {
            message_id_being_responded_to: get_u16(
                &obj,
                tags::MESSAGE_ID_BEING_RESPONDED_TO,
                "Message ID Being Responded To",
            )
            .unwrap_or(0),
        }),
        other => Ok(Command::Other {
            command_field: other,
            message_id: message_id.unwrap_or(0),
            has_data_set,
        }),
    }
}

fn encode(obj: &InMemDicomObject) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    obj.write_dataset_with_ts(&mut out, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .expect("writing a command set to memory cannot fail");
    out
}

/// C-STORE-RQ for one instance (the SCU side: the demo's scanner, and tests).
pub fn store_request(message_id: u16, sop_class_uid: &str, sop_instance_uid: &str) -> Vec<u8> {
    let obj = InMemDicomObject::command_from_element_iter([
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(sop_class_uid),
        ),
        DataElement::new(tags::COMMAND_FIELD, VR::US, dicom_value!(U16, [C_STORE_RQ])),
        DataElement::new(tags::MESSAGE_ID, VR::US, dicom_value!(U16, [message_id])),
        DataElement::new(tags::PRIORITY, VR::US, dicom_value!(U16, [0])),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            dicom_value!(U16, [0x0000]),
        ),
        DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(sop_instance_uid),
        ),
    ]);
    encode(&obj)
}

/// C-ECHO-RSP for `message_id`.
pub fn echo_response(message_id: u16) -> Vec<u8> {
    let obj = InMemDicomObject::command_from_element_iter([
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(dicom_dictionary_std::uids::VERIFICATION),
        ),
        DataElement::new(tags::COMMAND_FIELD, VR::US, dicom_value!(U16, [C_ECHO_RSP])),
        DataElement::new(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            VR::US,
            dicom_value!(U16, [message_id]),
        ),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            dicom_value!(U16, [NO_DATA_SET]),
        ),
        DataElement::new(tags::STATUS, VR::US, dicom_value!(U16, [status::SUCCESS])),
    ]);
    encode(&obj)
}

/// C-STORE-RSP (also used, with the request's command field | 0x8000, for refusals of
/// commands we do not serve).
pub fn store_response(
    command_field: u16,
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    status_code: u16,
    error_comment: Option<&str>,
) -> Vec<u8> {
    let mut elements = vec![
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(sop_class_uid),
        ),
        DataElement::new(
            tags::COMMAND_FIELD,
            VR::US,
            dicom_value!(U16, [command_field]),
        ),
        DataElement::new(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            VR::US,
            dicom_value!(U16, [message_id]),
        ),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            dicom_value!(U16, [NO_DATA_SET]),
        ),
        DataElement::new(tags::STATUS, VR::US, dicom_value!(U16, [status_code])),
    ];
    if let Some(comment) = error_comment {
        // Error Comment is LO: at most 64 characters, no backslash.
        let c: String = comment.replace('\\', "/").chars().take(64).collect();
        elements.push(DataElement::new(
            tags::ERROR_COMMENT,
            VR::LO,
            PrimitiveValue::from(c),
        ));
    }
    if !sop_instance_uid.is_empty() {
        elements.push(DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(sop_instance_uid),
        ));
    }
    encode(&InMemDicomObject::command_from_element_iter(elements))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_store_request() {
        let cmd = decode(&store_request(7, "1.2.840.10008.5.1.4.1.1.4", "1.2.3.4")).unwrap();
        assert_eq!(
            cmd,
            Command::Store {
                message_id: 7,
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.4".into(),
                sop_instance_uid: "1.2.3.4".into(),
                has_data_set: true
            }
        );
    }

    #[test]
    fn echo_response_answers_the_right_message() {
        let rsp = InMemDicomObject::read_dataset_with_ts(
            &echo_response(513)[..],
            &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .unwrap();
        assert_eq!(
            rsp.element(tags::MESSAGE_ID_BEING_RESPONDED_TO)
                .unwrap()
                .to_int::<u16>()
                .unwrap(),
            513
        );
        assert_eq!(
            rsp.element(tags::COMMAND_FIELD)
                .unwrap()
                .to_int::<u16>()
                .unwrap(),
            C_ECHO_RSP
        );
        assert_eq!(
            rsp.element(tags::STATUS).unwrap().to_int::<u16>().unwrap(),
            0
        );
    }

    #[test]
    fn store_response_carries_status_and_comment() {
        let long = "x".repeat(100);
        let bytes = store_response(
            C_STORE_RSP,
            9,
            "1.2",
            "1.2.3",
            status::OUT_OF_RESOURCES,
            Some(&long),
        );
        let rsp =
            InMemDicomObject::read_dataset_with_ts(&bytes[..], &IMPLICIT_VR_LITTLE_ENDIAN.erased())
                .unwrap();
        assert_eq!(
            rsp.element(tags::STATUS).unwrap().to_int::<u16>().unwrap(),
            0xA700
        );
        assert_eq!(
            rsp.element(tags::ERROR_COMMENT)
                .unwrap()
                .to_str()
                .unwrap()
                .len(),
            64
        );
        assert_eq!(
            decode(&bytes).unwrap(),
            Command::Other {
                command_field: C_STORE_RSP,
                message_id: 0,
                has_data_set: false
            }
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(&[0xff; 7]).is_err());
        assert!(decode(&[]).is_err());
        // A 16-byte command set claiming a 4 GiB UID is refused before any allocation.
        let mut forged = vec![0x00, 0x00, 0x02, 0x00];
        forged.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        forged.extend_from_slice(b"1.2.3.4.");
        let e = decode(&forged).unwrap_err();
        assert!(e.to_string().contains("runs past its end"), "{e}");
    }
}
