//! `entitygate audit-log verify`: the command line of [`crate::audit::verify`], the check of
//! the decision log's hash chain.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::audit::{self, HmacKey, GENESIS};

/// `entitygate audit-log verify FILE...`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The log files, oldest first (rotated files before the current one).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Check every line's HMAC with the key in this environment variable.
    #[arg(long, conflicts_with = "hmac_key_file")]
    pub hmac_key_env: Option<String>,
    /// Check every line's HMAC with the key in this file.
    #[arg(long)]
    pub hmac_key_file: Option<PathBuf>,
    /// The first file does not begin the chain: its first line must follow this line, the
    /// `seq` and hash kept elsewhere (an "audit checkpoint" log line, an earlier `verify`).
    #[arg(long, value_name = "SEQ:HASH", value_parser = parse_anchor)]
    pub after: Option<(u64, String)>,
}

/// `SEQ:HASH`, the hash as the log writes it (64 lowercase hex digits).
fn parse_anchor(s: &str) -> Result<(u64, String), String> {
    let (seq, hash) = s
        .split_once(':')
        .ok_or("expected SEQ:HASH (an audit checkpoint's anchor)")?;
    let seq = seq
        .parse::<u64>()
        .map_err(|_| format!("{seq:?} is not a sequence number"))?;
    if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!("{hash:?} is not a SHA-256 in lowercase hex"));
    }
    Ok((seq, hash.to_owned()))
}

/// Runs `entitygate audit-log verify`: 0 when the chain holds, 1 at the first line that
/// breaks it (printed as `FILE:LINE: reason`; a first file that does not begin the chain
/// breaks at its line 1 unless `--after` names the line it follows), 64 when the key cannot
/// be read.
pub fn verify(args: &VerifyArgs) -> ExitCode {
    let key = match (&args.hmac_key_env, &args.hmac_key_file) {
        (Some(var), _) => match std::env::var(var) {
            Ok(v) => HmacKey::new(v.as_bytes()).map(Some),
            Err(_) => Err(format!("environment variable {var} is not set")),
        },
        (None, Some(path)) => HmacKey::from_file(path).map(Some),
        (None, None) => Ok(None),
    };
    let key = match key {
        Ok(k) => k,
        Err(e) => {
            eprintln!("entitygate: {e}");
            return ExitCode::from(64);
        }
    };
    match audit::verify(&args.files, key.as_ref(), args.after.clone()) {
        Ok(report) => {
            for note in &report.notes {
                println!("note: {note}");
            }
            let (seq, hash) = report.last.clone().unwrap_or((0, GENESIS.to_owned()));
            println!(
                "ok: {} lines, chain intact{}; last seq {seq}, last hash {hash}",
                report.lines,
                if report.hmac_checked {
                    ", every HMAC verified"
                } else {
                    " (HMACs not checked)"
                }
            );
            ExitCode::SUCCESS
        }
        Err(brk) => {
            println!("broken: {brk}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anchor_is_seq_colon_hash() {
        let hash = "ab".repeat(32);
        assert_eq!(parse_anchor(&format!("41:{hash}")), Ok((41, hash.clone())));
        for bad in [
            hash.clone(),
            format!("x:{hash}"),
            format!("-1:{hash}"),
            format!("41:{}", hash.to_uppercase()),
            format!("41:{}", &hash[1..]),
        ] {
            assert!(parse_anchor(&bad).is_err(), "{bad}");
        }
    }
}
