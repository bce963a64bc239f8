//! The receiver against DCMTK's echoscu and storescu on loopback: echo, a whole study,
//! compressed transfer syntaxes, duplicates, series completion and `status`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use dicom_pixeldata::PixelDecoder;

#[test]
fn echo_answers_with_success() {
    let mut d = Daemon::start("");
    let out = echo(d.port, "ECHOSCU", "ONFH_EDGE");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    d.assert_serving();
}

#[test]
fn a_three_series_study_arrives_completely_and_completes() {
    let mut d = Daemon::start("");
    let dir = tempfile::tempdir().unwrap();
    let study = new_uid();
    let mut all = Vec::new();
    for (n, count) in [(1, 3), (2, 30), (3, 30)] {
        all.extend(mr_series(dir.path(), &study, n, count, 64));
    }
    let files: Vec<PathBuf> = all.iter().map(|i| i.path.clone()).collect();
    let (log, ok) = storescu(d.port, &[], &files);
    assert!(ok, "{log}");
    assert_eq!(stored_ok(&log).len(), 63, "{log}");

    // Count in SQLite == files on disk == files sent.
    assert_eq!(d.count("SELECT COUNT(*) FROM instances"), 63);
    assert_eq!(d.committed_files().len(), 63);
    assert!(d.tmp_files().is_empty());
    assert_eq!(d.count("SELECT COUNT(*) FROM series"), 3);
    assert_eq!(d.count("SELECT COUNT(*) FROM studies"), 1);
    // Every sent instance is indexed under the file name derived from its UID, and the
    // stored bytes decode to the pixels that were sent.
    let db = d.db();
    for inst in &all {
        let (file, series): (String, String) = db
            .query_row(
                "SELECT file_name, series_uid FROM instances WHERE sop_instance_uid = ?1",
                [&inst.sop_instance_uid],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(series, inst.series_uid);
        assert!(
            !file.contains(&inst.sop_instance_uid),
            "file name must not be the UID"
        );
        let stored = d.state_dir().join("spool").join(&file);
        assert!(stored.is_file());
    }
    let sample = &all[10];
    let file: String = db
        .query_row(
            "SELECT file_name FROM instances WHERE sop_instance_uid = ?1",
            [&sample.sop_instance_uid],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        decode_u16(&d.state_dir().join("spool").join(file)),
        sample.pixels
    );

    // Pending until the quiet period (2 s here) passes, then complete, all three.
    assert!(d.count("SELECT COUNT(*) FROM series_jobs WHERE state = 'collecting'") > 0);
    assert!(
        wait_until(Duration::from_secs(15), || d
            .count("SELECT COUNT(*) FROM series_jobs WHERE state = 'complete'")
            == 3),
        "series did not complete:\n{}",
        d.log()
    );
    let status = d.status_json();
    assert_eq!(status["summary"]["instances"], 63);
    assert_eq!(status["summary"]["series"], 3);
    assert_eq!(status["summary"]["jobs_complete"], 3);
    assert_eq!(status["summary"]["jobs_collecting"], 0);

    // Sending the same study again is idempotent: success, no second copy, no re-open.
    let (log, ok) = storescu(d.port, &[], &files[..5]);
    assert!(ok, "{log}");
    assert_eq!(stored_ok(&log).len(), 5);
    assert_eq!(d.count("SELECT COUNT(*) FROM instances"), 63);
    assert_eq!(d.committed_files().len(), 63);
    assert_eq!(
        d.count("SELECT COUNT(*) FROM series_jobs WHERE state = 'complete'"),
        3
    );

    // A late instance of a completed series re-opens it (collecting, generation 2) and it
    // completes again after the quiet period.
    let late_path = dir.path().join("late.dcm");
    let mut late = dicom_object::open_file(&all[20].path).unwrap();
    let late_uid = new_uid();
    late.put(dicom_core::DataElement::new(
        dicom_dictionary_std::tags::SOP_INSTANCE_UID,
        dicom_core::VR::UI,
        dicom_core::PrimitiveValue::from(late_uid.as_str()),
    ));
    late.meta_mut().media_storage_sop_instance_uid = late_uid.clone();
    late.write_to_file(&late_path).unwrap();
    let (log, ok) = storescu(d.port, &[], &[late_path]);
    assert!(ok, "{log}");
    let job = |d: &Daemon| -> (String, i64) {
        d.db()
            .query_row(
                "SELECT state, generation FROM series_jobs WHERE series_uid = ?1",
                [&all[20].series_uid],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    };
    assert_eq!(job(&d), ("collecting".to_string(), 2));
    assert!(wait_until(Duration::from_secs(15), || job(&d).0 == "complete"));
    assert_eq!(
        d.count("SELECT COUNT(*) FROM series_jobs WHERE state = 'complete'"),
        3
    );

    // The human status output names the counts.
    let out = std::process::Command::new(BIN)
        .args(["status", "--config"])
        .arg(&d.config_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("instances         64"), "{text}");
    assert!(
        !text.contains("PHANTOM"),
        "status must not show patient names"
    );
    // Patient identifiers never reach the log at info level.
    assert!(!d.log().contains("PHANTOM^SYNTHETIC") && !d.log().contains("SYNTHPID01"));
    d.assert_serving();
}

fn decode_u16(path: &std::path::Path) -> Vec<u16> {
    let obj = dicom_object::open_file(path).unwrap();
    let decoded = obj.decode_pixel_data().unwrap();
    decoded.to_vec::<u16>().unwrap()
}

fn ts_of(path: &std::path::Path) -> String {
    let obj = dicom_object::open_file(path).unwrap();
    obj.meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string()
}

#[test]
fn compressed_transfer_syntaxes_store_and_decode() {
    let mut d = Daemon::start("");
    let dir = tempfile::tempdir().unwrap();
    let study = new_uid();
    // storescu proposes a compressed syntax only when told to; P14 has no switch, so it
    // goes through an association profile file.
    let profile = dir.path().join("p14.cfg");
    std::fs::write(
        &profile,
        "[[TransferSyntaxes]]\n[P14]\nTransferSyntax1 = 1.2.840.10008.1.2.4.57\n\n\
         [[PresentationContexts]]\n[MRP14]\nPresentationContext1 = 1.2.840.10008.5.1.4.1.1.4\\P14\n\n\
         [[Profiles]]\n[P14ONLY]\nPresentationContexts = MRP14\n",
    )
    .unwrap();
    let profile_arg = profile.to_str().unwrap();
    // (tool making the fixture with its options, storescu options, expected syntax)
    type Case<'a> = (Option<(&'a str, Vec<&'a str>)>, Vec<&'a str>, &'a str);
    let cases: [Case; 5] = [
        (
            Some(("/usr/bin/dcmcrle", vec![])),
            vec!["-xr"],
            "1.2.840.10008.1.2.5",
        ),
        (
            Some(("/usr/bin/dcmcjpeg", vec!["+e1"])),
            vec!["-xs"],
            "1.2.840.10008.1.2.4.70",
        ),
        (
            Some(("/usr/bin/dcmcjpeg", vec!["+el"])),
            vec!["-xf", profile_arg, "P14ONLY"],
            "1.2.840.10008.1.2.4.57",
        ),
        (
            Some(("/usr/bin/dcmconv", vec!["+tb"])),
            vec![],
            "1.2.840.10008.1.2.2",
        ),
        // Deflate happens on the wire: storescu compresses the plain file itself.
        (None, vec!["-xd"], "1.2.840.10008.1.2.1.99"),
    ];
    let plain = mr_series(dir.path(), &study, 1, cases.len(), 96);
    for (k, (tool, scu_args, ts)) in cases.iter().enumerate() {
        let inst = &plain[k];
        let out = match tool {
            Some((tool, opts)) => {
                let out = dir.path().join(format!("c{k}.dcm"));
                let mut args: Vec<&std::ffi::OsStr> =
                    opts.iter().map(std::ffi::OsStr::new).collect();
                args.push(inst.path.as_os_str());
                args.push(out.as_os_str());
                run_tool(tool, &args);
                assert_eq!(ts_of(&out), *ts, "fixture not in the expected syntax");
                out
            }
            None => inst.path.clone(),
        };
        let (log, ok) = storescu(d.port, scu_args, std::slice::from_ref(&out));
        assert!(ok && stored_ok(&log).len() == 1, "{ts}: {log}\n{}", d.log());
        let file: String = d
            .db()
            .query_row(
                "SELECT file_name FROM instances WHERE sop_instance_uid = ?1",
                [&inst.sop_instance_uid],
                |r| r.get(0),
            )
            .unwrap();
        let stored = d.state_dir().join("spool").join(file);
        assert_eq!(ts_of(&stored), *ts, "stored in another syntax than sent");
        assert_eq!(
            decode_u16(&stored),
            inst.pixels,
            "{ts} does not decode to the sent pixels"
        );
    }
    // Uncompressed, implicit VR (storescu -xi proposes only Implicit VR LE).
    let extra = mr_series(dir.path(), &study, 2, 1, 96);
    let (log, ok) = storescu(d.port, &["-xi"], &[extra[0].path.clone()]);
    assert!(ok && stored_ok(&log).len() == 1, "{log}");
    let file: String = d
        .db()
        .query_row(
            "SELECT file_name FROM instances WHERE sop_instance_uid = ?1",
            [&extra[0].sop_instance_uid],
            |r| r.get(0),
        )
        .unwrap();
    let stored = d.state_dir().join("spool").join(file);
    assert_eq!(ts_of(&stored), "1.2.840.10008.1.2");
    assert_eq!(decode_u16(&stored), extra[0].pixels);
    d.assert_serving();
}

#[test]
fn instance_larger_than_the_memory_buffer_streams_to_disk_and_stores() {
    let mut d = Daemon::start("[receiver]\nmax_pdu = 65536\n");
    let dir = tempfile::tempdir().unwrap();
    // 1600 x 1600 x 2 bytes = 5.1 MB: more than the receiver keeps in memory.
    let big = mr_series(dir.path(), &new_uid(), 1, 2, 1600);
    let files: Vec<PathBuf> = big.iter().map(|i| i.path.clone()).collect();
    let (log, ok) = storescu(d.port, &[], &files);
    assert!(ok && stored_ok(&log).len() == 2, "{log}\n{}", d.log());
    assert!(d.tmp_files().is_empty());
    assert_eq!(d.committed_files().len(), 2);
    let file: String = d
        .db()
        .query_row(
            "SELECT file_name FROM instances WHERE sop_instance_uid = ?1",
            [&big[1].sop_instance_uid],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        decode_u16(&d.state_dir().join("spool").join(file)),
        big[1].pixels
    );
    d.assert_serving();
}

#[test]
fn enhanced_mr_and_jpeg_2000_are_stored() {
    let mut d = Daemon::start("");
    let dir = tempfile::tempdir().unwrap();
    // An instance of the Enhanced MR Image Storage class (the receiver does not interpret
    // the IOD, only its identifiers and pixel data).
    let emr = write_series(
        dir.path(),
        &SeriesSpec {
            study_uid: &new_uid(),
            series_number: 7,
            description: "EMR",
            count: 1,
            rows: 64,
            cols: 64,
            sop_class_uid: dicom_dictionary_std::uids::ENHANCED_MR_IMAGE_STORAGE,
        },
    );
    let (log, ok) = storescu(d.port, &[], &[emr[0].path.clone()]);
    assert!(ok && stored_ok(&log).len() == 1, "{log}");
    let class: String = d
        .db()
        .query_row("SELECT sop_class_uid FROM instances", [], |r| r.get(0))
        .unwrap();
    assert_eq!(class, dicom_dictionary_std::uids::ENHANCED_MR_IMAGE_STORAGE);

    // JPEG 2000 lossless, sent as is (-xv proposes it), decodes to the uncompressed pixels.
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let j2k = fixtures.join("MR_small_jp2klossless.dcm");
    assert_eq!(ts_of(&j2k), "1.2.840.10008.1.2.4.90");
    let (log, ok) = storescu(d.port, &["-xv"], std::slice::from_ref(&j2k));
    assert!(ok && stored_ok(&log).len() == 1, "{log}\n{}", d.log());
    let file: String = d
        .db()
        .query_row(
            "SELECT file_name FROM instances WHERE transfer_syntax_uid = '1.2.840.10008.1.2.4.90'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let stored = d.state_dir().join("spool").join(file);
    let pixels = |p: &std::path::Path| -> Vec<i32> {
        dicom_object::open_file(p)
            .unwrap()
            .decode_pixel_data()
            .unwrap()
            .to_vec::<i32>()
            .unwrap()
    };
    assert_eq!(pixels(&stored), pixels(&fixtures.join("MR_small.dcm")));
    d.assert_serving();
}
