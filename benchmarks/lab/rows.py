"""The row names of the benchmark's tables, JSON and plots: a module of constants only,
so that formatting or plotting results needs neither torch nor the benchmark."""

TRAIN = 'ours train form (eager)'
DEPLOY = 'ours deploy form (eager)'
RECOMMENDED = 'ours recommended (channels-last)'
COMPILED = 'ours recommended + compile'
ONNXRUNTIME = 'ours deploy, ONNX Runtime'
INT8_ONNXRUNTIME = 'ours deploy INT8, ONNX Runtime'
OPENVINO = 'ours deploy FP32, OpenVINO'
INT8_OPENVINO = 'ours deploy INT8, OpenVINO (NNCF)'
INT8_PYTORCH = 'ours deploy INT8, PyTorch (PT2E)'
MMPRETRAIN_DEPLOY = 'mmpretrain deploy (eager)'
RESNET18 = 'torchvision ResNet-18 (eager)'
RESNET50 = 'torchvision ResNet-50 (eager)'
