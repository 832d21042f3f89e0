//! PMI-1, the "simple" process-management wire protocol that MPICH's hydra,
//! Slurm and `weftrun` serve: the client ([`client`]) and the line format
//! both sides share ([`wire`]).

pub mod client;
pub mod wire;
