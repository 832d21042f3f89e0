//! Active messages in the engine: requests, running their handlers (the
//! thread is marked meanwhile, so that a handler calling back into the
//! engine gets an error instead of a deadlock) and replies.

use super::*;

/// Marks the current thread as running a handler until dropped.
struct HandlerGuard;

impl HandlerGuard {
    fn enter() -> HandlerGuard {
        IN_HANDLER.with(|f| f.set(true));
        HandlerGuard
    }
}

impl Drop for HandlerGuard {
    fn drop(&mut self) {
        IN_HANDLER.with(|f| f.set(false));
    }
}

impl Engine {
    /// Sends an active-message request; returns its handle's id.
    pub(crate) fn am_request(
        &self,
        st: &mut State,
        target: usize,
        handler: u32,
        data: Vec<u8>,
    ) -> Result<Id, Cause> {
        let id = st.reqs.insert(Entry {
            req: Req::AmWaiting { target },
            detached: false,
        });
        st.am_pending += 1;
        let env = Envelope {
            class: Class::AmRequest,
            ctx: handler,
            tag: id.token(),
        };
        self.send_owned(st, target, env, data)?;
        Ok(id)
    }

    /// Active-message requests not yet replied to.
    pub(crate) fn am_pending(st: &State) -> usize {
        st.am_pending
    }

    pub(super) fn am_done(st: &mut State, handle: Id, data: Vec<u8>) {
        st.am_pending -= 1;
        Self::complete(st, handle, Completion::Reply(data));
    }

    /// Runs the handler of a request and sends its reply.
    pub(super) fn handle(
        &self,
        st: &mut State,
        source: usize,
        env: Envelope,
        data: &[u8],
    ) -> Result<(), Cause> {
        let handler = self.handlers.get(env.ctx).ok_or_else(|| {
            malformed(
                source,
                format!(
                    "a request for handler {} of {}",
                    env.ctx,
                    self.handlers.len()
                ),
            )
        })?;
        let hlen = *data
            .first()
            .ok_or_else(|| malformed(source, "an empty active message".into()))?
            as usize;
        if data.len() < 1 + hlen {
            return Err(malformed(
                source,
                format!("an active-message header of {hlen} bytes in {}", data.len()),
            ));
        }
        let (header, payload) = data[1..].split_at(hlen);
        let mut ctx = AmContext::new(source, self.rank);
        let ran = {
            let _guard = HandlerGuard::enter();
            catch_unwind(AssertUnwindSafe(|| {
                (handler.run)(&mut ctx, header, payload)
            }))
        };
        if let Err(panic) = ran {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            return Err(Cause::HandlerPanicked {
                handler: handler.name.clone(),
                message: msg,
            });
        }
        let reply = Envelope {
            class: Class::AmReply,
            ctx: 0,
            tag: env.tag,
        };
        self.send_owned(st, source, reply, ctx.into_reply())
    }
}
