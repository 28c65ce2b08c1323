/**
 * rebasin: align neural networks by permuting hidden units (re-basin), analyse linear mode
 * connectivity, merge models and learn continually — on Node.js, no Python.
 *
 * The public API, grouped as the source tree is: numeric core → permutations → methods →
 * analysis → models, data, training, checkpoints → experiments.
 */

// Numeric core: tensors, autodiff, ops (as F), optimisers, RNG, backends.
export * from './core/index.js';

// Permutations: specs, applying them, linear assignment, Sinkhorn.
export * from './permutation/spec.js';
export { UnionFind } from './permutation/union-find.js';
export { applyHard, applySoft, checkPermutation, composePermutations, composePerms, entryIndex, identityPerms, invertPermutation, invertPerms, permutationMatrices, permutationMatrix, randomPerms, rowArgmax, validatePerms, withinLists, type ApplySoftOptions, type Perms } from './permutation/apply.js';
// Model states: named tensor maps.
export { type Params, lerpState, weightedAverage, splitState, mergeState, cloneState, isBufferName, isBatchCounter, mergeWeights } from './state/params.js';
export { linearSumAssignment, permutationFromAssignment, type Assignment, type AssignmentOptions } from './permutation/assignment.js';
export { sinkhorn, newSinkhornDiagnostics, newSinkhornWorkspace, type SinkhornOptions, type CgWarmStart, type SinkhornDiagnostics, type SinkhornWorkspace, type SinkhornFallback } from './permutation/sinkhorn.js';
export { checkEquivalence, type EquivalenceResult } from './permutation/equivalence.js';

// Methods.
export type { AlignInput, AlignResult, StepLog, StepCallback } from './methods/types.js';
export { weightMatching, WEIGHT_MATCHING_DEFAULTS, type WeightMatchingOptions } from './methods/weight-matching.js';
export { weightMatchingLazy, type TensorSource, type LazyAlignInput, type LazyAlignResult, type WeightMatchingLazyOptions } from './methods/weight-matching-lazy.js';
export { activationMatching, ACTIVATION_MATCHING_DEFAULTS, type ActivationMatchingOptions, type ActivationStatistic } from './methods/activation-matching.js';
export { straightThroughEstimator, STE_DEFAULTS, type SteOptions } from './methods/ste.js';
export { naive } from './methods/naive.js';
export { sinkhornRebasin, hardPermutations, widthTau, annealTau, TAU_SCHEDULES, describeTau, REFERENCE_SINKHORN, WEIGHT_COST_DEFAULTS, DATA_COST_DEFAULTS, SINKHORN_KEEP, type SinkhornKeep, type TauSchedule, type SinkhornRebasinOptions, type SinkhornRebasinResult, type RebasinCost } from './methods/sinkhorn-rebasin.js';
export { sinkhornBarycenter, type SinkhornBarycenterOptions, type BarycenterCost, type BarycenterTau } from './methods/sinkhorn-barycenter.js';
export { weightCost, WEIGHT_COSTS, WEIGHT_COST_NAMES, type WeightCostKind, type WeightCostDef } from './methods/costs.js';
export { midpointCost, randomPointCost, DATA_COSTS, DATA_COST_NAMES, type DataCostKind, type DataCostOptions } from './methods/data-costs.js';
export { alignModels, METHODS, METHOD_NAMES, needsData, type MethodName, type MethodContext, type MethodEntry, type MethodOptions } from './methods/registry.js';
export { MERGE_STRATEGIES, MERGE_STRATEGY_NAMES, mergeModels, strategyNeedsData, type MergeInput, type MergeResult, type MergeStrategyEntry, type MergeStrategyName, type MergeStrategyOptions } from './methods/merge.js';

// Analysis.
export { interpolationCurve, barrier, lambdas, type CurvePoint, type BarrierSummary, type BnMode, type CurveOptions } from './analysis/lmc.js';

// Models and model states.
export * from './models/index.js';

// Data, training.
export * from './data/index.js';
export { trainModel, type TrainOptions, type TrainResult, type EpochStats } from './training/train.js';
export { evaluate, evaluateEnsemble, reestimateBatchNorm, type EnsembleMember, type EnsembleOptions, type EvalOptions, type EvalResult } from './training/evaluate.js';
export { stateLoss, type Batch, type Criterion } from './models/loss.js';

// Checkpoints and formats.
export * from './io/safetensors.js';
export * from './io/npy.js';
export { FormatError } from './io/errors.js';
export { writeFileAtomic, writeFileAtomicSync } from './io/atomic.js';
export { saveCheckpoint, loadCheckpoint, stateToRecords, recordsToState, type Checkpoint } from './io/checkpoint.js';
export { loadTensors, loadSpecFile, type LoadedTensors, type TensorFileFormat } from './io/load-any.js';
export { readOnnx, parseOnnx, type OnnxModel } from './io/onnx.js';
export { importOnnx, inferSpecFromOnnx, ONNX_OPS, type ImportedOnnx, type OnnxSpecResult } from './io/onnx-import.js';
export { readTfjs, writeTfjs } from './io/tfjs.js';
export { importTfjs, inferSpecFromTfjs, tfjsToPytorchLayout, pytorchToTfjsLayout, TFJS_LAYERS, type ImportedTfjs, type ImportTfjsOptions, type TfjsParamPlan, type TfjsSpecResult } from './io/tfjs-import.js';
export type { ArrayRecord, StateDict } from './io/records.js';
export { safetensorsSource, applyPermutationsStreaming, type SafetensorsSource, type StreamingApplyResult } from './io/align-lazy.js';
export { hfPreset, detectArchitecture, specForSibling, HF_ARCHITECTURES, HEAD_MODES, type HfPreset, type HfPresetOptions, type HfModelConfig, type HeadMode, type HfArchitecture } from './io/hf-presets.js';
export { openCheckpoint, refusePickle, type CheckpointReader } from './io/safetensors-sharded.js';

// Continual learning and experiments.
export * as continual from './continual/index.js';
export { runRecovery, type RecoveryOptions, type RecoveryRow } from './experiments/recovery.js';
export { runLmc, taskSetup, type LmcOptions, type LmcRow } from './experiments/lmc.js';
export { MERGE_VARIANTS, runMergeExperiment, type MergeExperimentOptions, type MergeRow } from './experiments/merge.js';
export { runContinual } from './experiments/continual.js';
export { readRunState } from './experiments/continual-state.js';

export { InputError, CheckFailedError } from './errors.js';
