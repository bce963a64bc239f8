//! A small C-STORE SCU: sends DICOM files to a peer over one association.
//!
//! Used by `onfh-edge demo` to play the scanner. It proposes, per SOP class, the files' own
//! transfer syntaxes plus the uncompressed ones, and re-encodes a native (uncompressed)
//! data set when the peer accepted a different uncompressed syntax. It is blocking (dicom-ul's
//! synchronous client); async callers run it in `spawn_blocking`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextResultReason};
use dicom_ul::{ClientAssociationOptions, Pdu};

use super::dimse;

const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";

/// Why sending failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ScuError {
    /// A file could not be read as DICOM.
    #[error("cannot read {path}: {message}")]
    File { path: PathBuf, message: String },
    /// The association could not be established or broke.
    #[error("association with {peer}: {message}")]
    Association { peer: String, message: String },
}

/// The peer's answer for one file.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The file.
    pub path: PathBuf,
    /// DIMSE status of the C-STORE-RSP.
    pub status: u16,
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> ScuError {
    ScuError::File {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Send `files` to `peer` (host:port) as `calling` → `called`, one association.
pub fn store_files(
    peer: &str,
    calling: &str,
    called: &str,
    files: &[PathBuf],
) -> Result<Vec<Sent>, ScuError> {
    let assoc_err = |e: &dyn std::fmt::Display| ScuError::Association {
        peer: peer.to_string(),
        message: e.to_string(),
    };
    // SOP class -> transfer syntaxes found among the files.
    let mut classes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in files {
        let obj = dicom_object::OpenFileOptions::new()
            .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
            .open_file(f)
            .map_err(|e| file_err(f, e))?;
        let meta = obj.meta();
        let class = meta
            .media_storage_sop_class_uid()
            .trim_end_matches('\0')
            .to_string();
        let ts = meta.transfer_syntax().trim_end_matches('\0').to_string();
        let list = classes.entry(class).or_default();
        if !list.contains(&ts) {
            list.push(ts);
        }
    }
    let mut options = ClientAssociationOptions::new()
        .calling_ae_title(calling)
        .called_ae_title(called)
        .read_timeout(Duration::from_secs(60))
        .write_timeout(Duration::from_secs(60));
    for (class, tss) in &classes {
        let mut proposed = tss.clone();
        for ts in [EXPLICIT_LE, IMPLICIT_LE] {
            if !proposed.iter().any(|t| t == ts) {
                proposed.push(ts.to_string());
            }
        }
        options = options.with_presentation_context(class.clone(), proposed);
    }
    let mut assoc = options.establish_with(peer).map_err(|e| assoc_err(&e))?;
    // Without this, Nagle's algorithm meets the peer's delayed ACK on every message tail.
    let _ = assoc.inner_stream().set_nodelay(true);
    let mut results = Vec::with_capacity(files.len());
    for (n, f) in files.iter().enumerate() {
        let message_id = (n % 0xFFFF + 1) as u16;
        let obj = dicom_object::open_file(f).map_err(|e| file_err(f, e))?;
        let class = obj
            .meta()
            .media_storage_sop_class_uid()
            .trim_end_matches('\0')
            .to_string();
        let uid = obj
            .meta()
            .media_storage_sop_instance_uid()
            .trim_end_matches('\0')
            .to_string();
        let file_ts = obj
            .meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_string();
        let pcs: Vec<_> = assoc
            .presentation_contexts()
            .iter()
            .filter(|pc| {
                pc.abstract_syntax == class
                    && pc.reason == PresentationContextResultReason::Acceptance
            })
            .cloned()
            .collect();
        let pc = pcs
            .iter()
            .find(|pc| pc.transfer_syntax == file_ts)
            .or_else(|| pcs.first())
            .ok_or_else(|| assoc_err(&format!("no accepted presentation context for {class}")))?;
        let ts = TransferSyntaxRegistry
            .get(&pc.transfer_syntax)
            .ok_or_else(|| assoc_err(&"peer accepted an unknown transfer syntax"))?;
        let mut data = Vec::new();
        obj.write_dataset_with_ts(&mut data, ts)
            .map_err(|e| file_err(f, format!("cannot encode in {}: {e}", ts.name())))?;
        let status = c_store(&mut assoc, pc.id, message_id, &class, &uid, &data)
            .map_err(|e| assoc_err(&e))?;
        results.push(Sent {
            path: f.clone(),
            status,
        });
    }
    assoc.release().map_err(|e| assoc_err(&e))?;
    Ok(results)
}

/// One C-STORE on an established association: the command, the data set (already encoded
/// in the context's transfer syntax), and the response's status.
pub(crate) fn c_store(
    assoc: &mut dicom_ul::ClientAssociation<std::net::TcpStream>,
    pc: u8,
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    data: &[u8],
) -> Result<u16, String> {
    let command = dimse::store_request(message_id, sop_class_uid, sop_instance_uid);
    assoc
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc,
                value_type: PDataValueType::Command,
                is_last: true,
                data: command,
            }],
        })
        .map_err(|e| e.to_string())?;
    {
        let mut writer = assoc.send_pdata(pc);
        writer.write_all(data).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
    }
    match assoc.receive().map_err(|e| e.to_string())? {
        Pdu::PData { data } => {
            let bytes: Vec<u8> = data.into_iter().flat_map(|v| v.data).collect();
            let rsp = InMemDicomObject::read_dataset_with_ts(
                &bytes[..],
                &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
            )
            .map_err(|e| e.to_string())?;
            rsp.element(dicom_dictionary_std::tags::STATUS)
                .ok()
                .and_then(|e| e.to_int::<u16>().ok())
                .ok_or_else(|| "C-STORE-RSP without a status".to_string())
        }
        other => Err(format!("unexpected answer {other:?}")),
    }
}
