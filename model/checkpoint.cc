#include "model/checkpoint.h"

#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "nlohmann/json.hpp"
#include "base/status_macros.h"

namespace strata::model {
namespace {

using Json = nlohmann::json;

absl::Status CheckShardName(FileSystem* fs, const std::string& dir_real, const std::string& index,
                            const std::string& name) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.find('\\') != std::string::npos || name.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(index, ": shard file name \"", name,
                     "\" must be a plain file name inside the model folder"));
  }
  STRATA_ASSIGN_OR_RETURN(std::string real, fs->RealPath(JoinPath(dir_real, name)));
  if (!absl::StartsWith(real, dir_real + "/") || real.find('/', dir_real.size() + 1) != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(index, ": shard \"", name, "\" resolves to ", real,
                                                   ", outside the model folder ", dir_real));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(FileSystem* fs, const std::string& dir) {
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
  ckpt->dir_ = dir;
  const std::string config_path = JoinPath(dir, "config.json");
  if (!fs->Exists(config_path)) {
    return absl::NotFoundError(absl::StrCat(dir, " is not a model folder: no config.json"));
  }
  STRATA_ASSIGN_OR_RETURN(std::string config_text, fs->ReadFile(config_path, kMaxConfigBytes));
  auto config = ParseLlamaConfig(config_text);
  if (!config.ok()) {
    return absl::Status(config.status().code(), absl::StrCat(dir, "/", config.status().message()));
  }
  ckpt->config_ = *config;

  const std::string single = JoinPath(dir, "model.safetensors");
  const std::string index_path = JoinPath(dir, "model.safetensors.index.json");
  if (fs->Exists(index_path)) {
    STRATA_ASSIGN_OR_RETURN(std::string dir_real, fs->RealPath(dir));
    STRATA_ASSIGN_OR_RETURN(std::string text, fs->ReadFile(index_path, kMaxIndexBytes));
    Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": not a JSON object"));
    }
    auto wm = j.find("weight_map");
    if (wm == j.end() || !wm->is_object() || wm->empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": \"weight_map\" missing, empty or not an object"));
    }
    std::map<std::string, size_t> shard_index;
    std::map<std::string, std::string> expected;  // tensor -> shard
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it.value().is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map entry \"",
                                                       it.key(), "\" must be a file name"));
      }
      const std::string shard = it.value().get<std::string>();
      if (shard_index.count(shard) == 0) {
        STRATA_RETURN_IF_ERROR(CheckShardName(fs, dir_real, index_path, shard));
        STRATA_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(fs, JoinPath(dir, shard)));
        shard_index[shard] = ckpt->files_.size();
        ckpt->files_.push_back(std::move(file));
      }
      expected[it.key()] = shard;
    }
    for (size_t i = 0; i < ckpt->files_.size(); ++i) {
      for (const TensorEntry& e : ckpt->files_[i]->header().tensors) {
        auto [pos, inserted] = ckpt->where_.emplace(e.name, i);
        if (!inserted) {
          return absl::InvalidArgumentError(
              absl::StrCat(dir, ": tensor \"", e.name, "\" appears in both ",
                           ckpt->files_[pos->second]->path(), " and ", ckpt->files_[i]->path()));
        }
      }
    }
    for (const auto& [tensor, shard] : expected) {
      auto w = ckpt->where_.find(tensor);
      if (w == ckpt->where_.end() || w->second != shard_index[shard]) {
        return absl::InvalidArgumentError(absl::StrCat(
            index_path, ": weight_map puts tensor \"", tensor, "\" in ", shard, ", which lacks it"));
      }
    }
  } else if (fs->Exists(single)) {
    STRATA_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(fs, single));
    for (const TensorEntry& e : file->header().tensors) ckpt->where_.emplace(e.name, 0);
    ckpt->files_.push_back(std::move(file));
  } else {
    return absl::NotFoundError(absl::StrCat(
        dir, " has neither model.safetensors nor model.safetensors.index.json"));
  }
  return ckpt;
}

absl::StatusOr<TensorView> Checkpoint::Find(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    return absl::NotFoundError(absl::StrCat(dir_, ": checkpoint has no tensor \"", name, "\""));
  }
  return files_[it->second]->Find(name);
}

std::vector<std::string> Checkpoint::TensorNames() const {
  std::vector<std::string> names;
  for (const auto& [name, file] : where_) names.push_back(name);
  return names;
}

}  // namespace strata::model
