//! Storage for pending operations: slots reused through a free list, each
//! id carrying a generation so that a stale id never reaches a newer entry.

/// The id of an entry: slot index in the low 32 bits (the token sent on the
/// wire), generation in the high 32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Id(u64);

impl Id {
    /// The slot index, used as the wire token.
    pub(crate) fn token(self) -> u32 {
        self.0 as u32
    }
}

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// A slab of `T`s addressed by [`Id`].
pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slab<T> {
    pub(crate) fn insert(&mut self, value: T) -> Id {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    value: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.value = Some(value);
        Id(u64::from(slot.generation) << 32 | u64::from(index))
    }

    fn slot(&self, id: Id) -> Option<&Slot<T>> {
        self.slots
            .get(id.token() as usize)
            .filter(|s| s.generation == (id.0 >> 32) as u32)
    }

    pub(crate) fn get(&self, id: Id) -> Option<&T> {
        self.slot(id)?.value.as_ref()
    }

    pub(crate) fn get_mut(&mut self, id: Id) -> Option<&mut T> {
        let slot = self.slots.get_mut(id.token() as usize)?;
        if slot.generation != (id.0 >> 32) as u32 {
            return None;
        }
        slot.value.as_mut()
    }

    /// The live entry in slot `token`, as named by a peer.
    pub(crate) fn by_token(&mut self, token: u32) -> Option<(Id, &mut T)> {
        let slot = self.slots.get_mut(token as usize)?;
        let id = Id(u64::from(slot.generation) << 32 | u64::from(token));
        slot.value.as_mut().map(|v| (id, v))
    }

    pub(crate) fn remove(&mut self, id: Id) -> Option<T> {
        let slot = self.slots.get_mut(id.token() as usize)?;
        if slot.generation != (id.0 >> 32) as u32 {
            return None;
        }
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.token());
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_ids_miss_reused_slots() {
        let mut s = Slab::default();
        let a = s.insert("a");
        assert_eq!(s.remove(a), Some("a"));
        let b = s.insert("b");
        assert_eq!(a.token(), b.token(), "the slot is reused");
        assert_eq!(s.get(a), None);
        assert_eq!(s.remove(a), None);
        assert_eq!(s.get(b), Some(&"b"));
        assert_eq!(
            s.by_token(b.token()).map(|(id, v)| (id, *v)),
            Some((b, "b"))
        );
        assert_eq!(s.by_token(99).map(|_| ()), None);
    }
}
