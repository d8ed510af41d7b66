//! Trajectories of a simulated physical system, drawn from a seed: a damped double pendulum
//! (two point masses on rigid massless rods) integrated with fourth-order Runge-Kutta. The
//! stand-in for the robot-hand trajectories of Du & Mordatch 2019: a few degrees of freedom,
//! smooth but nonlinear (chaotic at high energy) dynamics, many trajectories from random
//! initial states.
//!
//! A state is `[theta1, theta2, omega1, omega2]`: the angles of the two rods from the downward
//! vertical (radians, not wrapped, so a rod that goes over the top keeps counting) and their
//! angular velocities. Damping is a viscous generalised force `-c M(theta) omega`, which adds
//! `-c omega` to both angular accelerations and never increases the mechanical energy.
//!
//! ```
//! use ebm_data::trajectories::{TrajectoryConfig, Trajectories};
//! # fn main() -> ebm_data::Result<()> {
//! let mut rng = ebm_core::seeded_rng(0);
//! let set = Trajectories::generate(&TrajectoryConfig::default(), 8, &mut rng)?;
//! assert_eq!(set.state(3, 10).len(), 4);
//! let (inputs, targets) = set.windows(3)?;
//! assert_eq!(inputs.len(), 8 * (set.steps() - 3) * 3 * 4);
//! assert_eq!(targets.len(), 8 * (set.steps() - 3) * 4);
//! # Ok(())
//! # }
//! ```

use crate::{Error, Result};

/// Values per state: two angles and two angular velocities.
pub const STATE_DIM: usize = 4;

/// The physical constants of a double pendulum (SI units).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DoublePendulum {
    /// Mass of the inner bob (kg).
    pub mass1: f64,
    /// Mass of the outer bob (kg).
    pub mass2: f64,
    /// Length of the inner rod (m).
    pub length1: f64,
    /// Length of the outer rod (m).
    pub length2: f64,
    /// Gravitational acceleration (m/s^2).
    pub gravity: f64,
    /// Viscous damping rate `c` (1/s): both angular accelerations get `-c omega`.
    pub damping: f64,
}

impl Default for DoublePendulum {
    /// Unit masses and rods, g = 9.81, damping 0.1 / s.
    fn default() -> Self {
        Self {
            mass1: 1.0,
            mass2: 1.0,
            length1: 1.0,
            length2: 1.0,
            gravity: 9.81,
            damping: 0.1,
        }
    }
}

impl DoublePendulum {
    /// Checks that masses, lengths and gravity are positive and finite, damping finite and
    /// non-negative.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("mass1", self.mass1),
            ("mass2", self.mass2),
            ("length1", self.length1),
            ("length2", self.length2),
            ("gravity", self.gravity),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::Invalid(format!(
                    "double pendulum: {name} must be positive and finite, got {v}"
                )));
            }
        }
        if !(self.damping.is_finite() && self.damping >= 0.0) {
            return Err(Error::Invalid(format!(
                "double pendulum: damping must be finite and >= 0, got {}",
                self.damping
            )));
        }
        Ok(())
    }

    /// The time derivative of a state `[theta1, theta2, omega1, omega2]`: the equations of
    /// motion of two point masses on massless rods, plus the damping.
    pub fn derivative(&self, s: [f64; 4]) -> [f64; 4] {
        let [t1, t2, w1, w2] = s;
        let (m1, m2, l1, l2, g) = (
            self.mass1,
            self.mass2,
            self.length1,
            self.length2,
            self.gravity,
        );
        let d = t1 - t2;
        let den = 2.0 * m1 + m2 - m2 * (2.0 * d).cos();
        let a1 = (-g * (2.0 * m1 + m2) * t1.sin()
            - m2 * g * (t1 - 2.0 * t2).sin()
            - 2.0 * d.sin() * m2 * (w2 * w2 * l2 + w1 * w1 * l1 * d.cos()))
            / (l1 * den);
        let a2 = 2.0
            * d.sin()
            * (w1 * w1 * l1 * (m1 + m2) + g * (m1 + m2) * t1.cos() + w2 * w2 * l2 * m2 * d.cos())
            / (l2 * den);
        [w1, w2, a1 - self.damping * w1, a2 - self.damping * w2]
    }

    /// One classical Runge-Kutta step of length `dt`.
    pub fn rk4_step(&self, s: [f64; 4], dt: f64) -> [f64; 4] {
        let add = |a: [f64; 4], b: [f64; 4], h: f64| std::array::from_fn(|i| a[i] + h * b[i]);
        let k1 = self.derivative(s);
        let k2 = self.derivative(add(s, k1, dt / 2.0));
        let k3 = self.derivative(add(s, k2, dt / 2.0));
        let k4 = self.derivative(add(s, k3, dt));
        std::array::from_fn(|i| s[i] + dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]))
    }

    /// Kinetic plus potential energy of a state (zero potential at the pivot's height).
    pub fn energy(&self, s: [f64; 4]) -> f64 {
        let [t1, t2, w1, w2] = s;
        let (m1, m2, l1, l2, g) = (
            self.mass1,
            self.mass2,
            self.length1,
            self.length2,
            self.gravity,
        );
        let kinetic = 0.5 * (m1 + m2) * l1 * l1 * w1 * w1
            + 0.5 * m2 * l2 * l2 * w2 * w2
            + m2 * l1 * l2 * w1 * w2 * (t1 - t2).cos();
        let potential = -(m1 + m2) * g * l1 * t1.cos() - m2 * g * l2 * t2.cos();
        kinetic + potential
    }
}

/// How trajectories are drawn: the system, the time grid, and the range of initial states.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrajectoryConfig {
    /// The physical system.
    pub system: DoublePendulum,
    /// Seconds between recorded states.
    pub dt: f64,
    /// Runge-Kutta steps per recorded interval (each of length `dt / substeps`).
    pub substeps: usize,
    /// Recorded states per trajectory, the initial state included.
    pub steps: usize,
    /// Initial angles are drawn uniformly from `[-max_angle, max_angle]` (radians).
    pub max_angle: f64,
    /// Initial angular velocities are drawn uniformly from `[-max_speed, max_speed]` (rad/s).
    pub max_speed: f64,
}

impl Default for TrajectoryConfig {
    /// The default pendulum, states every 0.05 s (5 RK4 substeps), 100 states per trajectory,
    /// initial angles within 1 rad and speeds within 1 rad/s.
    fn default() -> Self {
        Self {
            system: DoublePendulum::default(),
            dt: 0.05,
            substeps: 5,
            steps: 100,
            max_angle: 1.0,
            max_speed: 1.0,
        }
    }
}

impl TrajectoryConfig {
    /// Checks the system and that the time grid and ranges make sense.
    pub fn validate(&self) -> Result<()> {
        self.system.validate()?;
        if !(self.dt.is_finite() && self.dt > 0.0) {
            return Err(Error::Invalid(format!(
                "trajectories: dt must be positive and finite, got {}",
                self.dt
            )));
        }
        if self.substeps == 0 || self.steps < 2 {
            return Err(Error::Invalid(format!(
                "trajectories: need substeps >= 1 and steps >= 2, got substeps {} and steps {}",
                self.substeps, self.steps
            )));
        }
        for (name, v) in [("max_angle", self.max_angle), ("max_speed", self.max_speed)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::Invalid(format!(
                    "trajectories: {name} must be finite and >= 0, got {v}"
                )));
            }
        }
        Ok(())
    }

    /// One trajectory from the initial state `s0`: `steps` states, the first being `s0`.
    pub fn integrate(&self, s0: [f64; 4]) -> Result<Vec<[f64; 4]>> {
        self.validate()?;
        let h = self.dt / self.substeps as f64;
        let mut s = s0;
        let mut out = Vec::with_capacity(self.steps);
        out.push(s);
        for _ in 1..self.steps {
            for _ in 0..self.substeps {
                s = self.system.rk4_step(s, h);
            }
            if s.iter().any(|v| !v.is_finite()) {
                return Err(Error::Invalid(format!(
                    "trajectories: the integration from {s0:?} diverged (dt {} too large?)",
                    self.dt
                )));
            }
            out.push(s);
        }
        Ok(out)
    }
}

/// Trajectories in memory: `count` trajectories of `steps` states of [`STATE_DIM`] values,
/// row-major `[count, steps, STATE_DIM]` in f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Trajectories {
    states: Vec<f32>,
    count: usize,
    steps: usize,
}

impl Trajectories {
    /// `count` trajectories from initial states drawn from `rng` (uniform in the config's
    /// ranges, four draws per trajectory in the order theta1, theta2, omega1, omega2): the same
    /// generator state gives the same trajectories.
    pub fn generate<R: rand::Rng + ?Sized>(
        config: &TrajectoryConfig,
        count: usize,
        rng: &mut R,
    ) -> Result<Self> {
        config.validate()?;
        if count == 0 {
            return Err(Error::Invalid(
                "trajectories: count must be at least 1".into(),
            ));
        }
        let mut states = Vec::with_capacity(count * config.steps * STATE_DIM);
        for _ in 0..count {
            let mut draw = |r: f64| {
                if r > 0.0 {
                    rng.random_range(-r..=r)
                } else {
                    0.0
                }
            };
            let s0 = [
                draw(config.max_angle),
                draw(config.max_angle),
                draw(config.max_speed),
                draw(config.max_speed),
            ];
            for s in config.integrate(s0)? {
                states.extend(s.iter().map(|&v| v as f32));
            }
        }
        Ok(Self {
            states,
            count,
            steps: config.steps,
        })
    }

    /// Wraps existing states `[count, steps, STATE_DIM]`.
    pub fn from_states(states: Vec<f32>, count: usize, steps: usize) -> Result<Self> {
        if count == 0 || steps == 0 || states.len() != count * steps * STATE_DIM {
            return Err(Error::Invalid(format!(
                "trajectories: {} values do not make {count} trajectories of {steps} states of {STATE_DIM} (count and steps >= 1)",
                states.len()
            )));
        }
        Ok(Self {
            states,
            count,
            steps,
        })
    }

    /// The number of trajectories.
    pub fn count(&self) -> usize {
        self.count
    }

    /// States per trajectory.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Every state, `[count, steps, STATE_DIM]` row-major.
    pub fn states(&self) -> &[f32] {
        &self.states
    }

    /// Trajectory `i`, `[steps, STATE_DIM]` row-major. Panics when `i >= count`.
    pub fn trajectory(&self, i: usize) -> &[f32] {
        let len = self.steps * STATE_DIM;
        &self.states[i * len..(i + 1) * len]
    }

    /// State `t` of trajectory `i`. Panics when out of range.
    pub fn state(&self, i: usize, t: usize) -> &[f32] {
        assert!(
            t < self.steps,
            "state {t} of a trajectory of {}",
            self.steps
        );
        &self.trajectory(i)[t * STATE_DIM..(t + 1) * STATE_DIM]
    }

    /// Every window of `history` consecutive states with the state that follows it, trajectory
    /// by trajectory in time order: inputs `[N, history * STATE_DIM]` and targets
    /// `[N, STATE_DIM]`, row-major, `N = count * (steps - history)`.
    pub fn windows(&self, history: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        if history == 0 || history >= self.steps {
            return Err(Error::Invalid(format!(
                "trajectories: a history of {history} states needs 1 <= history < steps = {}",
                self.steps
            )));
        }
        let per = self.steps - history;
        let mut inputs = Vec::with_capacity(self.count * per * history * STATE_DIM);
        let mut targets = Vec::with_capacity(self.count * per * STATE_DIM);
        for i in 0..self.count {
            let traj = self.trajectory(i);
            for t in 0..per {
                inputs.extend_from_slice(&traj[t * STATE_DIM..(t + history) * STATE_DIM]);
                targets.extend_from_slice(
                    &traj[(t + history) * STATE_DIM..(t + history + 1) * STATE_DIM],
                );
            }
        }
        Ok((inputs, targets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: u64) -> ebm_core::Rng {
        ebm_core::seeded_rng(seed)
    }

    #[test]
    fn same_seed_same_trajectories() {
        let cfg = TrajectoryConfig {
            steps: 30,
            ..Default::default()
        };
        let a = Trajectories::generate(&cfg, 5, &mut rng(1)).unwrap();
        let b = Trajectories::generate(&cfg, 5, &mut rng(1)).unwrap();
        let c = Trajectories::generate(&cfg, 5, &mut rng(2)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.states().iter().all(|v| v.is_finite()));
    }

    #[test]
    fn energy_is_conserved_without_damping_and_decreases_with_it() {
        // The energy of a conservative system is a constant of motion: RK4 at dt 0.002 keeps it
        // to far better than 1e-6 of its scale over 10 s of chaotic-ish motion.
        let free = DoublePendulum {
            damping: 0.0,
            ..Default::default()
        };
        let cfg = TrajectoryConfig {
            system: free,
            dt: 0.01,
            substeps: 5,
            steps: 1001,
            ..Default::default()
        };
        let s0 = [1.2, -0.7, 0.5, 1.0];
        let traj = cfg.integrate(s0).unwrap();
        let e0 = free.energy(s0);
        let scale = 2.0 * 9.81 + 9.81; // |potential| at rest
        let drift = traj
            .iter()
            .map(|&s| (free.energy(s) - e0).abs())
            .fold(0.0, f64::max);
        assert!(drift < 1e-6 * scale, "energy drift {drift}");

        let damped = TrajectoryConfig {
            system: DoublePendulum {
                damping: 0.3,
                ..Default::default()
            },
            ..cfg
        };
        let traj = damped.integrate(s0).unwrap();
        let energies: Vec<f64> = traj.iter().map(|&s| damped.system.energy(s)).collect();
        for w in energies.windows(2) {
            assert!(w[1] <= w[0] + 1e-9, "energy rose: {} -> {}", w[0], w[1]);
        }
        assert!(energies[energies.len() - 1] < energies[0] - 1.0);
    }

    #[test]
    fn small_oscillations_have_the_normal_mode_period() {
        // Equal masses and lengths: the small-angle normal modes have omega^2 = (g/l)(2 -+ sqrt 2),
        // the slow one with theta2 = sqrt(2) theta1 (any mechanics textbook). Started on the slow
        // mode at rest, theta1 first crosses zero a quarter period later.
        let free = DoublePendulum {
            damping: 0.0,
            ..Default::default()
        };
        let omega = (free.gravity * (2.0 - 2f64.sqrt())).sqrt();
        let quarter = std::f64::consts::PI / (2.0 * omega);
        let a = 1e-3;
        let cfg = TrajectoryConfig {
            system: free,
            dt: 1e-3,
            substeps: 1,
            steps: 2000,
            ..Default::default()
        };
        let traj = cfg.integrate([a, 2f64.sqrt() * a, 0.0, 0.0]).unwrap();
        let k = traj.iter().position(|s| s[0] <= 0.0).unwrap();
        // Linear interpolation between the two recorded states around the crossing.
        let (t0, t1) = (traj[k - 1][0], traj[k][0]);
        let crossing = ((k - 1) as f64 + t0 / (t0 - t1)) * cfg.dt;
        assert!(
            (crossing - quarter).abs() < 1e-4,
            "quarter period {crossing}, expected {quarter}"
        );
        // And the ratio theta2 / theta1 stays sqrt(2) on the mode.
        let s = traj[k / 2];
        assert!((s[1] / s[0] - 2f64.sqrt()).abs() < 1e-3, "{s:?}");
    }

    #[test]
    fn windows_pair_each_history_with_the_next_state() {
        let states: Vec<f32> = (0..2 * 5 * STATE_DIM).map(|v| v as f32).collect();
        let set = Trajectories::from_states(states, 2, 5).unwrap();
        let (inputs, targets) = set.windows(2).unwrap();
        assert_eq!(inputs.len(), 2 * 3 * 2 * STATE_DIM);
        assert_eq!(targets.len(), 2 * 3 * STATE_DIM);
        // Window 4 = trajectory 1, t = 1: states 1 and 2 of trajectory 1, then state 3.
        assert_eq!(
            &inputs[4 * 8..4 * 8 + 8],
            &[24., 25., 26., 27., 28., 29., 30., 31.]
        );
        assert_eq!(&targets[4 * 4..4 * 4 + 4], &[32., 33., 34., 35.]);
        assert_eq!(set.state(1, 3), &[32., 33., 34., 35.]);
    }

    #[test]
    fn bad_configs_are_errors_that_name_the_field() {
        let mut cfg = TrajectoryConfig::default();
        cfg.system.length2 = 0.0;
        let e = Trajectories::generate(&cfg, 1, &mut rng(0)).unwrap_err();
        assert!(e.to_string().contains("length2"), "{e}");
        let cfg = TrajectoryConfig {
            dt: -1.0,
            ..Default::default()
        };
        assert!(cfg.validate().unwrap_err().to_string().contains("dt"));
        let e = Trajectories::generate(&TrajectoryConfig::default(), 0, &mut rng(0)).unwrap_err();
        assert!(e.to_string().contains("count"), "{e}");
        let set = Trajectories::generate(
            &TrajectoryConfig {
                steps: 4,
                ..Default::default()
            },
            1,
            &mut rng(0),
        )
        .unwrap();
        assert!(set.windows(4).unwrap_err().to_string().contains("history"));
        assert!(Trajectories::from_states(vec![0.0; 7], 1, 2).is_err());
    }
}
