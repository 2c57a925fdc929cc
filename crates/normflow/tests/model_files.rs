//! Model directories: corrupt, truncated, mismatched or newer files fail with clear errors.

use std::path::Path;

use normflow::candle::{DType, Device, Tensor};
use normflow::distributions::Distribution;
use normflow::flows::{AutoregressiveSpec, CouplingSpec, FlowSpec};
use normflow::model::{read_spec, Model, FORMAT_VERSION};
use normflow::Result;

fn saved(dir: &Path, spec: FlowSpec) -> Result<Model> {
    let m = Model::new(spec, None, None, 1, DType::F32, &Device::Cpu)?;
    m.store().perturb(0.1, 2)?;
    let state = vec![("adam.step".to_string(), Tensor::new(3f32, &Device::Cpu)?)];
    m.save(dir, Some(&state))?;
    Ok(m)
}

fn load_err(dir: &Path) -> String {
    Model::load(dir, &Device::Cpu).unwrap_err().to_string()
}

fn maf() -> FlowSpec {
    FlowSpec::Maf(AutoregressiveSpec { layers: 2, hidden: 8, ..AutoregressiveSpec::new(3) })
}

#[test]
fn a_saved_model_round_trips_with_its_optimizer_state() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| normflow::Error::io("tmp", e))?;
    let m = saved(dir.path(), maf())?;
    let loaded = Model::load(dir.path(), &Device::Cpu)?;
    assert_eq!(loaded.spec().flow, m.spec().flow);
    let state = loaded.load_optimizer_state(dir.path())?.expect("optimizer state was saved");
    assert_eq!(state["adam.step"].to_scalar::<f32>()?, 3.0);
    let x = Tensor::ones((2, 3), DType::F32, &Device::Cpu)?;
    assert_eq!(
        m.log_prob(&x, None)?.to_vec1::<f32>()?,
        loaded.log_prob(&x, None)?.to_vec1::<f32>()?
    );
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .map_err(|e| normflow::Error::io(dir.path(), e))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()).unwrap_or_default())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
    Ok(())
}

#[test]
fn missing_and_non_model_directories_are_named() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| normflow::Error::io("tmp", e))?;
    assert!(load_err(&dir.path().join("nope")).contains("not a model directory"));
    std::fs::write(dir.path().join("spec.json"), "{\"hello\": 1}")
        .map_err(|e| normflow::Error::io("w", e))?;
    assert!(load_err(dir.path()).contains("not a normflow model"));
    std::fs::write(dir.path().join("spec.json"), "{\"format\": \"normflow-mo")
        .map_err(|e| normflow::Error::io("w", e))?;
    assert!(load_err(dir.path()).contains("truncated"));
    Ok(())
}

#[test]
fn truncated_or_swapped_weights_fail_the_checksum() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| normflow::Error::io("tmp", e))?;
    saved(dir.path(), maf())?;
    let weights = dir.path().join("weights.safetensors");
    let bytes = std::fs::read(&weights).map_err(|e| normflow::Error::io(&weights, e))?;
    std::fs::write(&weights, &bytes[..bytes.len() / 2])
        .map_err(|e| normflow::Error::io(&weights, e))?;
    let err = load_err(dir.path());
    assert!(err.contains("weights.safetensors") && err.contains("checksum"), "{err}");

    // Weights of another model under this spec: caught by the checksum as well.
    let other = tempfile::tempdir().map_err(|e| normflow::Error::io("tmp", e))?;
    saved(other.path(), FlowSpec::RealNvp(CouplingSpec { hidden: 8, ..CouplingSpec::new(3) }))?;
    std::fs::copy(other.path().join("weights.safetensors"), &weights)
        .map_err(|e| normflow::Error::io(&weights, e))?;
    assert!(load_err(dir.path()).contains("checksum"));
    Ok(())
}

/// A re-save of the same model (a training loop saving its best epoch) first writes a spec that
/// accepts the weights it replaces: a process killed between the two files leaves a directory
/// that loads, with the old or the new weights.
#[test]
fn a_resave_interrupted_between_its_files_still_loads() -> Result<()> {
    let io = |e: std::io::Error| normflow::Error::io("test file", e);
    let dir = tempfile::tempdir().map_err(io)?;
    let m = saved(dir.path(), maf())?;
    let weights = dir.path().join("weights.safetensors");
    let old = std::fs::read(&weights).map_err(io)?;
    let x = Tensor::ones((2, 3), DType::F32, &Device::Cpu)?;
    let old_lp = m.log_prob(&x, None)?.to_vec1::<f32>()?;
    m.store().perturb(0.1, 3)?;
    m.save(dir.path(), None)?;
    let done = read_spec(dir.path())?;
    assert_eq!(done.replaced_weights_crc32, None, "a completed save accepts only its weights");
    assert!(done.weights_crc32 != normflow::model::io::checksum(&old));

    // The interim spec of that save, with the old weights still in place.
    let interim = normflow::model::ModelSpec {
        replaced_weights_crc32: Some(normflow::model::io::checksum(&old)),
        ..done
    };
    let json = serde_json::to_vec(&interim)?;
    std::fs::write(dir.path().join("spec.json"), json).map_err(io)?;
    std::fs::write(&weights, &old).map_err(io)?;
    let loaded = Model::load(dir.path(), &Device::Cpu)?;
    assert_eq!(loaded.log_prob(&x, None)?.to_vec1::<f32>()?, old_lp);
    // Saving again from there completes normally, and other weights are still refused.
    loaded.save(dir.path(), None)?;
    assert_eq!(read_spec(dir.path())?.replaced_weights_crc32, None);
    std::fs::write(&weights, &old[..old.len() - 1]).map_err(io)?;
    assert!(load_err(dir.path()).contains("checksum"));
    Ok(())
}

#[test]
fn a_spec_edited_to_another_shape_names_the_tensor() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| normflow::Error::io("tmp", e))?;
    saved(dir.path(), maf())?;
    let path = dir.path().join("spec.json");
    let text = std::fs::read_to_string(&path).map_err(|e| normflow::Error::io(&path, e))?;
    std::fs::write(&path, text.replace("\"hidden\": 8", "\"hidden\": 9"))
        .map_err(|e| normflow::Error::io(&path, e))?;
    let err = load_err(dir.path());
    assert!(err.contains("has shape") && err.contains("expects"), "{err}");
    Ok(())
}

#[test]
fn newer_format_versions_and_invalid_specs_are_refused() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| normflow::Error::io("tmp", e))?;
    saved(dir.path(), maf())?;
    let path = dir.path().join("spec.json");
    let text = std::fs::read_to_string(&path).map_err(|e| normflow::Error::io(&path, e))?;
    let newer = text.replace(
        &format!("\"format_version\": {FORMAT_VERSION}"),
        &format!("\"format_version\": {}", FORMAT_VERSION + 1),
    );
    std::fs::write(&path, newer).map_err(|e| normflow::Error::io(&path, e))?;
    assert!(load_err(dir.path()).contains("newer normflow"));
    std::fs::write(&path, text.replace("\"layers\": 2", "\"layers\": 0"))
        .map_err(|e| normflow::Error::io(&path, e))?;
    assert!(read_spec(dir.path()).unwrap_err().to_string().contains("layers"));
    Ok(())
}

/// A model on a bounded support samples inside it, and the support survives a save and load.
#[test]
fn a_model_on_an_interval_samples_inside_it_and_keeps_it_on_disk() -> normflow::Result<()> {
    use normflow::bijections::Support;
    let support = Support::Interval { low: -4.0, high: 4.0 };
    let model = Model::new(
        FlowSpec::RealNvp(CouplingSpec::new(2)),
        None,
        None,
        3,
        DType::F64,
        &Device::Cpu,
    )?
    .with_support(support)?;
    model.store().perturb(0.02, 7)?;
    let mut rng = normflow::random::rng_from_seed(5);
    let x = model.sample(500, None, &mut rng)?;
    assert!(support.contains(&x)?, "{:?}", (x.min_all()?, x.max_all()?));
    let dir = tempfile::tempdir().expect("temporary directory");
    model.save(dir.path(), None)?;
    let loaded = Model::load(dir.path(), &Device::Cpu)?;
    assert_eq!(loaded.spec().support, support);
    let (a, b) = (model.log_prob(&x, None)?, loaded.log_prob(&x, None)?);
    assert_eq!(a.to_vec1::<f64>()?, b.to_vec1::<f64>()?);
    Ok(())
}
