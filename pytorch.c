// pytorch.c — torch.save files in and out without Python: a zip reader/writer, a
// pickle machine restricted to what torch.save writes, and the name mappings between
// VirTex checkpoints, torchvision ResNets and Detectron2 backbones. model.h section 11.
#include <stdlib.h>
#include <string.h>
#include "model.h"
