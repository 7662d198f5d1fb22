//! The image store requests (`image_import`, `image_ls`, `image_rm`; see docs/api.md). An
//! import or removal runs in the image helper ([`crate::images::helper`]); this file only
//! checks, starts it, and answers the client that asked when the reaper reports its end.

use super::conn::Mode;
use super::ControlServer;
use crate::images::helper::{Action, Outcome};
use crate::reactor::Reactor;
use crate::supervisor::{ApiError, Supervisor};
use manifest::protocol::{ImageInfo, Response};
use std::os::fd::OwnedFd;

impl ControlServer {
    fn store(&self) -> Result<&crate::images::Store, ApiError> {
        self.applied
            .as_ref()
            .map(|a| a.store())
            .ok_or(ApiError::NoStateDir)
    }

    pub(super) fn image_ls(
        &mut self,
        id: u64,
        sup: &Supervisor,
        r: &mut Reactor,
    ) -> Result<(), ApiError> {
        let refs = self.store()?.refs();
        let applied = sup.applied_services();
        let images = refs
            .into_iter()
            .map(|(image, i)| ImageInfo {
                used_by: applied
                    .iter()
                    .filter(|s| s.image.as_deref() == Some(image.as_str()))
                    .map(|s| s.name.clone())
                    .collect(),
                image,
                id: i.id,
                layers: i.chain.len(),
            })
            .collect();
        self.finish(id, &Response::Images { images }, r);
        Ok(())
    }

    pub(super) fn image_import(
        &mut self,
        id: u64,
        image: String,
        mut fds: Vec<OwnedFd>,
    ) -> Result<(), ApiError> {
        manifest::validate::check_image_ref(&image).map_err(ApiError::ImageRequest)?;
        if fds.len() != 1 {
            return Err(ApiError::ImageRequest(format!(
                "image import needs the archive as one file descriptor with the request; got {}",
                fds.len()
            )));
        }
        let fd = fds.pop();
        let dir = self.store()?.dir().to_path_buf();
        let pid = self
            .images
            .start(id, Action::Import, &image, &dir, fd)
            .map_err(ApiError::ImageBusy)?;
        crate::info!("images", "importing {image} (helper pid {pid})");
        self.set_mode(id, Mode::Image);
        Ok(())
    }

    pub(super) fn image_rm(
        &mut self,
        id: u64,
        image: String,
        sup: &Supervisor,
    ) -> Result<(), ApiError> {
        let store = self.store()?;
        if !store.refs().contains_key(&image) {
            return Err(ApiError::UnknownImage(image));
        }
        if let Some(svc) = crate::applied::AppliedSet::uses_image(&sup.applied_services(), &image) {
            return Err(ApiError::ImageInUse {
                image,
                service: svc,
            });
        }
        let dir = store.dir().to_path_buf();
        let pid = self
            .images
            .start(id, Action::Rm, &image, &dir, None)
            .map_err(ApiError::ImageBusy)?;
        crate::info!("images", "removing {image} (helper pid {pid})");
        self.set_mode(id, Mode::Image);
        Ok(())
    }

    /// Once per loop turn: what the image helper printed.
    pub fn poll_images(&mut self) {
        self.images.poll();
    }

    /// The reaper saw `pid` exit; true if it was the image helper.
    pub fn image_exited(&mut self, pid: i32, status: &str, r: &mut Reactor) -> bool {
        let Some(f) = self.images.exited(pid, status) else {
            return false;
        };
        match f.outcome {
            Outcome::Imported {
                image,
                unpacked,
                shared,
                warnings,
                collected,
            } => {
                crate::info!(
                    "images",
                    "imported {} ({}): {unpacked} layers unpacked, {shared} shared, {collected} unused removed",
                    f.image,
                    image.id
                );
                let info = ImageInfo {
                    image: f.image,
                    id: image.id,
                    layers: image.chain.len(),
                    used_by: Vec::new(),
                };
                let resp = Response::ImageImported {
                    image: info,
                    unpacked,
                    shared,
                    warnings,
                };
                self.finish(f.client, &resp, r);
            }
            Outcome::Removed { collected } => {
                crate::info!(
                    "images",
                    "removed {} ({collected} unused layers removed)",
                    f.image
                );
                let message = format!("{} removed ({collected} unused layers removed)", f.image);
                self.finish(f.client, &Response::Ok { message }, r);
            }
            Outcome::Error { message } => {
                let what = match f.action {
                    Action::Import => "not imported",
                    Action::Rm => "not removed",
                };
                crate::error!("images", "{} {what}: {message}", f.image);
                let e = ApiError::ImageFailed(format!("{} {what}: {message}", f.image));
                self.error(f.client, e, r);
            }
        }
        true
    }
}
