//! A hand-driven association (dicom-ul, the upper-layer crate the daemon itself uses) for
//! peers DCMTK will not play: garbage, aborts and truncation mid-transfer, hostile data sets.
#![allow(dead_code, unused_imports)]

use std::net::TcpStream;
use std::time::Duration;

use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::{
    EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
};
use dicom_ul::pdu::{PDataValue, PDataValueType};
use dicom_ul::{ClientAssociation, ClientAssociationOptions, Pdu};
use onfh_edge::dicom::dimse;

use super::{Daemon, Instance, mr_series, new_uid};

pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

pub fn connect(port: u16, calling: &str) -> ClientAssociation<TcpStream> {
    ClientAssociationOptions::new()
        .calling_ae_title(calling)
        .called_ae_title("ONFH_EDGE")
        .with_presentation_context(uids::MR_IMAGE_STORAGE, vec![EXPLICIT_LE])
        .read_timeout(Duration::from_secs(20))
        .establish(("127.0.0.1", port))
        .expect("association")
}

/// A hand-driven association with one generated instance to send, piece by piece.
pub struct Raw {
    pub a: ClientAssociation<TcpStream>,
    pub pc: u8,
    pub inst: Instance,
    /// The instance's data set, Explicit VR Little Endian.
    pub data: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Raw {
    /// Generate a `size` x `size` instance and open an association for it.
    pub fn new(d: &Daemon, size: u16) -> Raw {
        let dir = tempfile::tempdir().unwrap();
        let inst = mr_series(dir.path(), &new_uid(), 1, 1, size).remove(0);
        let obj = dicom_object::open_file(&inst.path).unwrap();
        let mut data = Vec::new();
        obj.write_dataset_with_ts(&mut data, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
            .unwrap();
        let a = connect(d.port, "RAWSCU");
        let pc = a.presentation_contexts()[0].id;
        Raw {
            a,
            pc,
            inst,
            data,
            _dir: dir,
        }
    }

    /// Send a C-STORE-RQ for `uid` (the instance's own when None).
    pub fn command(&mut self, message_id: u16, uid: Option<&str>) {
        let uid = uid.unwrap_or(&self.inst.sop_instance_uid).to_string();
        let rq = dimse::store_request(message_id, uids::MR_IMAGE_STORAGE, &uid);
        self.send(PDataValueType::Command, true, rq);
    }

    /// Send `bytes` as data fragments of at most 64 KiB; the last one flagged `last`.
    pub fn data(&mut self, bytes: &[u8], last: bool) {
        let chunks: Vec<&[u8]> = bytes.chunks(64 * 1024).collect();
        for (i, c) in chunks.iter().enumerate() {
            self.send(
                PDataValueType::Data,
                last && i + 1 == chunks.len(),
                c.to_vec(),
            );
        }
    }

    pub fn send(&mut self, kind: PDataValueType, is_last: bool, data: Vec<u8>) {
        self.a
            .send(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: self.pc,
                    value_type: kind,
                    is_last,
                    data,
                }],
            })
            .unwrap();
    }

    /// Receive a C-STORE-RSP: (status, error comment).
    pub fn response(&mut self) -> (u16, Option<String>) {
        let pdu = self.a.receive().unwrap();
        let Pdu::PData { data } = pdu else {
            panic!("expected P-DATA, got {pdu:?}")
        };
        let bytes: Vec<u8> = data.into_iter().flat_map(|v| v.data).collect();
        let obj =
            InMemDicomObject::read_dataset_with_ts(&bytes[..], &IMPLICIT_VR_LITTLE_ENDIAN.erased())
                .unwrap();
        let status = obj.element(tags::STATUS).unwrap().to_int::<u16>().unwrap();
        let comment = obj
            .element_opt(tags::ERROR_COMMENT)
            .unwrap()
            .map(|e| e.to_str().unwrap().to_string());
        (status, comment)
    }
}
