//! [`ParamStore`]: a model's trainable tensors, by name, in a fixed order.

use std::collections::HashMap;

use candle_core::{Tensor, Var};

use crate::{Error, Result};

/// A model's trainable parameters: named [`Var`]s in the order they were created, so that an
/// optimiser's state lines up with them run after run.
#[derive(Debug, Default, Clone)]
pub struct ParamStore {
    entries: Vec<(String, Var)>,
}

impl ParamStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `value` as a trainable parameter named `name` and returns its tensor (which
    /// stays connected to the variable for autograd).
    pub fn add(&mut self, name: impl Into<String>, value: &Tensor) -> Result<Tensor> {
        let name = name.into();
        if self.get(&name).is_some() {
            return Err(Error::Config(format!("parameter {name} registered twice")));
        }
        let var = Var::from_tensor(&value.detach())?;
        let tensor = var.as_tensor().clone();
        self.entries.push((name, var));
        Ok(tensor)
    }

    /// The variable named `name`.
    pub fn get(&self, name: &str) -> Option<&Var> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Names and variables in creation order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// The variables in creation order.
    pub fn vars(&self) -> Vec<Var> {
        self.entries.iter().map(|(_, v)| v.clone()).collect()
    }

    /// The number of parameters (tensors).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no parameter is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The number of scalar parameters.
    pub fn num_scalars(&self) -> usize {
        self.entries.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Overwrites every parameter with the tensor of the same name, in place (so tensors handed
    /// out by [`ParamStore::add`] see the new values). Every name must be present with the
    /// right shape; `origin` names the source in errors.
    pub fn load(&self, tensors: &HashMap<String, Tensor>, origin: &std::path::Path) -> Result<()> {
        let problem = |p: String| Error::Checkpoint {
            path: origin.to_path_buf(),
            problem: p,
        };
        for (name, var) in &self.entries {
            let t = tensors
                .get(name)
                .ok_or_else(|| problem(format!("tensor {name} is missing")))?;
            if t.dims() != var.dims() {
                return Err(problem(format!(
                    "tensor {name} has shape {:?}, the model expects {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
        Ok(())
    }
}
