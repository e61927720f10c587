//! Where passphrases come from (docs/guide.md, "Encrypted repositories"): `--password-file` or
//! `PUCE_PASSWORD_FILE`, else `PUCE_PASSWORD_COMMAND`, else the systemd credential
//! `puce-passphrase` (`$CREDENTIALS_DIRECTORY`), else the terminal, asked without echo.

use std::io::{IsTerminal as _, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use puce_core::keyfile::{Passphrase, PassphraseSource};
use puce_core::{Error, ErrorKind};
use zeroize::Zeroize as _;

/// The name of the systemd credential holding the passphrase (`LoadCredential=puce-passphrase:
/// FILE` in the unit).
pub const CREDENTIAL: &str = "puce-passphrase";
/// The most read from a passphrase file or command: a passphrase is a line.
const MAX: u64 = 64 * 1024;

/// The source of an existing key's passphrase, given `--password-file`.
pub fn source(file: Option<PathBuf>) -> PassphraseSource {
    PassphraseSource::new(move |prompt| existing(file.as_deref(), prompt))
}

/// The passphrase from the first source set, else asked on the terminal with `prompt`.
pub fn existing(file: Option<&Path>, prompt: &str) -> puce_core::Result<Passphrase> {
    if let Some(p) = non_interactive(file)? {
        return Ok(p);
    }
    ask(prompt)
}

/// The passphrase from `file`, `PUCE_PASSWORD_COMMAND` or the systemd credential, if one is set.
fn non_interactive(file: Option<&Path>) -> puce_core::Result<Option<Passphrase>> {
    if let Some(f) = file {
        return from_file(f).map(Some);
    }
    if let Some(cmd) = std::env::var_os("PUCE_PASSWORD_COMMAND").filter(|c| !c.is_empty()) {
        return from_command(&cmd.to_string_lossy()).map(Some);
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let p = Path::new(&dir).join(CREDENTIAL);
        if p.is_file() {
            return from_file(&p).map(Some);
        }
    }
    Ok(None)
}

/// A new passphrase: from `file` if given, else (when `sources` says so) from the sources of
/// [`existing`], else asked twice on the terminal.
pub fn new(file: Option<&Path>, sources: Option<&Path>, what: &str) -> anyhow::Result<Passphrase> {
    if let Some(f) = file {
        return Ok(from_file(f)?);
    }
    if let Some(p) = non_interactive(sources)? {
        return Ok(p);
    }
    let p = ask(&format!("new passphrase for {what}"))?;
    let again = ask("the same passphrase again")?;
    if p.as_bytes() != again.as_bytes() {
        anyhow::bail!(Error::new(
            ErrorKind::Key,
            "the two passphrases differ: nothing was changed"
        ));
    }
    Ok(p)
}

fn ask(prompt: &str) -> puce_core::Result<Passphrase> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::new(
            ErrorKind::Key,
            format!(
                "a passphrase is needed ({prompt}), and there is no terminal to ask on: give \
                 --password-file FILE, or set PUCE_PASSWORD_FILE or PUCE_PASSWORD_COMMAND, or a \
                 systemd credential '{CREDENTIAL}'"
            ),
        ));
    }
    let line = rpassword::prompt_password(format!("{prompt}: ")).map_err(|e| {
        Error::new(ErrorKind::Key, format!("cannot read the passphrase: {e}")).with_source(e)
    })?;
    Passphrase::new(line.into_bytes(), "the terminal")
}

/// The first line of `text` (without its line end), as a passphrase from `what`.
fn first_line(mut bytes: Vec<u8>, what: &str) -> puce_core::Result<Passphrase> {
    let end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    let mut line: Vec<u8> = bytes[..end].to_vec();
    bytes.zeroize();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Passphrase::new(line, what)
}

fn from_file(path: &Path) -> puce_core::Result<Passphrase> {
    let bytes = puce_core::keyfile::read_bounded(path, MAX, "passphrase file")?;
    first_line(bytes, &path.display().to_string())
}

/// Run `cmd` with `sh -c`; its first line of output is the passphrase.
fn from_command(cmd: &str) -> puce_core::Result<Passphrase> {
    let what = format!("PUCE_PASSWORD_COMMAND ({cmd})");
    let fail = |why: String| Error::new(ErrorKind::Key, format!("{what} {why}"));
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| fail(format!("cannot be started: {e}")))?;
    let mut out = Vec::new();
    let read = child
        .stdout
        .take()
        .map(|s| s.take(MAX + 1).read_to_end(&mut out));
    if out.len() as u64 > MAX {
        let _ = child.kill();
        let _ = child.wait();
        out.zeroize();
        return Err(fail(format!(
            "printed more than {MAX} bytes: a passphrase is one line"
        )));
    }
    let status = child
        .wait()
        .map_err(|e| fail(format!("cannot be waited for: {e}")))?;
    if let Some(Err(e)) = read {
        out.zeroize();
        return Err(fail(format!("output cannot be read: {e}")));
    }
    if !status.success() {
        out.zeroize();
        return Err(fail(format!(
            "failed ({status}): nothing was read from it; run it by hand to see why"
        )));
    }
    first_line(out, &what)
}
