//! `sysctr image import|ls|rm`: the image store on the state partition, for applied
//! services that name an `image`. The archive goes to init as an open file descriptor, so
//! `-` works over ssh; init's helper process unpacks it.

use crate::client::{Client, ClientError};
use manifest::protocol::{ImageInfo, Op, Request, Response};
use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::os::fd::AsRawFd;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  sysctr image import web.tar web:1.0
  ssh root@box sysctr image import - web:1.0 < web.tar
  sysctr image ls
  sysctr image rm web:1.0")]
pub struct Args {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Import an `oci-archive` or `docker save` tar (uncompressed) as NAME:TAG.
    #[command(after_help = "\
Every blob is checked against its digest and every layer against its diff_id; a layer
already in the store (by chain id) is not unpacked again. An archive holding several
images is refused unless it has only one. Importing a NAME:TAG again replaces it. Only root
may import.

Examples:
  sysctr image import web.tar web:1.0
  ssh root@box sysctr image import - web:1.0 < web.tar")]
    Import(ImportArgs),
    /// List the images in the store and the applied services that use them.
    #[command(after_help = "\
Examples:
  sysctr image ls
  sysctr image ls --json")]
    Ls(LsArgs),
    /// Remove an image no applied service names; its unshared layers are removed too.
    #[command(after_help = "\
Examples:
  sysctr image rm web:1.0")]
    Rm(RmArgs),
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The archive, or `-` for standard input.
    #[arg(value_name = "FILE|-")]
    pub file: String,
    /// The name the image gets in the store.
    #[arg(value_name = "NAME:TAG")]
    pub image: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    #[arg(value_name = "NAME:TAG")]
    pub image: String,
}

pub fn run(args: &Args, client: &Client, out: &mut dyn Write) -> anyhow::Result<i32> {
    match &args.command {
        ImageCommand::Import(a) => import(a, client, out),
        ImageCommand::Ls(a) => ls(a, client, out),
        ImageCommand::Rm(a) => match client.call(&Request::new(Op::ImageRm {
            image: a.image.clone(),
        }))? {
            Response::Ok { message } => {
                writeln!(out, "{message}")?;
                Ok(0)
            }
            other => Err(ClientError::unexpected("ok", other).into()),
        },
    }
}

fn import(a: &ImportArgs, client: &Client, out: &mut dyn Write) -> anyhow::Result<i32> {
    if let Err(why) = manifest::validate::check_image_ref(&a.image) {
        anyhow::bail!("{why}");
    }
    let file;
    let fd = if a.file == "-" {
        if io::stdin().is_terminal() {
            anyhow::bail!("standard input is a terminal; pipe or redirect an archive into `sysctr image import -`");
        }
        io::stdin().as_raw_fd()
    } else {
        file = File::open(&a.file)
            .map_err(|e| anyhow::anyhow!("cannot open archive {}: {e}", a.file))?;
        file.as_raw_fd()
    };
    let mut conn = client.connect()?;
    // An import takes as long as the archive does to read and unpack: no reply deadline.
    conn.set_timeout(None)?;
    let req = Request::new(Op::ImageImport {
        image: a.image.clone(),
    });
    conn.send_with_fds(&req, &[fd])?;
    match conn.recv_reply()? {
        Response::ImageImported {
            image,
            unpacked,
            shared,
            warnings,
        } => {
            for w in &warnings {
                eprintln!("sysctr: {w}");
            }
            if a.json {
                let v = serde_json::json!({"image": image, "unpacked": unpacked, "shared": shared, "warnings": warnings});
                writeln!(out, "{v}")?;
            } else {
                writeln!(
                    out,
                    "imported {} ({}): {} layers, {unpacked} unpacked, {shared} already in the store",
                    image.image, image.id, image.layers
                )?;
            }
            Ok(0)
        }
        other => Err(ClientError::unexpected("image_imported", other).into()),
    }
}

fn ls(a: &LsArgs, client: &Client, out: &mut dyn Write) -> anyhow::Result<i32> {
    let images = match client.call(&Request::new(Op::ImageLs {}))? {
        Response::Images { images } => images,
        other => return Err(ClientError::unexpected("images", other).into()),
    };
    if a.json {
        serde_json::to_writer_pretty(&mut *out, &images)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", table(&images))?;
    }
    Ok(0)
}

fn table(images: &[ImageInfo]) -> String {
    let w = images
        .iter()
        .map(|i| i.image.len())
        .max()
        .unwrap_or(0)
        .max(5);
    let mut s = format!("{:<w$}  {:<19}  {:>6}  USED BY\n", "IMAGE", "ID", "LAYERS");
    for i in images {
        let id: String =
            i.id.trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect();
        let used = if i.used_by.is_empty() {
            "-".to_string()
        } else {
            i.used_by.join(",")
        };
        s.push_str(&format!(
            "{:<w$}  sha256:{id:<12}  {:>6}  {used}\n",
            i.image, i.layers
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_one_line_per_image() {
        let t = table(&[ImageInfo {
            image: "web:1".into(),
            id: format!("sha256:{}", "ab".repeat(32)),
            layers: 2,
            used_by: vec!["web".into()],
        }]);
        assert_eq!(
            t,
            "IMAGE  ID                   LAYERS  USED BY\nweb:1  sha256:abababababab       2  web\n"
        );
    }
}
