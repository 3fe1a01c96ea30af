// A Hugging Face model folder: config.json plus either model.safetensors or
// model-0000N-of-0000M.safetensors shards listed by
// model.safetensors.index.json. Files are mapped, not read: a worker that
// looks up only its tensors touches only their pages.
#ifndef STRATA_MODEL_CHECKPOINT_H_
#define STRATA_MODEL_CHECKPOINT_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/config.h"
#include "model/file_system.h"
#include "model/safetensors.h"

namespace strata::model {

class Checkpoint {
 public:
  // Opens and validates the folder. Shard names in the index must be plain
  // file names inside the folder (no "/", no "..", no symlink leading out);
  // every tensor the index names must be in the shard it names; a tensor
  // name may appear in one shard only. `fs` must outlive the checkpoint.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(FileSystem* fs, const std::string& dir);

  const LlamaConfig& config() const { return config_; }
  const std::string& dir() const { return dir_; }

  // The tensor, or NOT_FOUND naming it and the folder.
  absl::StatusOr<TensorView> Find(const std::string& name) const;
  bool Has(const std::string& name) const { return where_.count(name) > 0; }
  std::vector<std::string> TensorNames() const;

 private:
  Checkpoint() = default;
  std::string dir_;
  LlamaConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // tensor name -> index in files_
};

inline constexpr uint64_t kMaxConfigBytes = 1 << 20;
inline constexpr uint64_t kMaxIndexBytes = 64 << 20;

}  // namespace strata::model

#endif  // STRATA_MODEL_CHECKPOINT_H_
