"""Writing results: PNG maps and a GLB with a glTF PBR material (written with pygltflib).

The GLB embeds the very PNG bytes written as separate files (no second encode), and packs occlusion,
roughness and metalness into one ORM image (R=AO, G=roughness, B=metallic) that both
occlusionTexture and metallicRoughnessTexture reference, as glTF intends.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pygltflib as gl

from .tangents import mikktspace_tangents

# zlib level 1 with the run-length strategy: on baked maps (smooth gradients after PNG's row filters)
# this is both faster and smaller than level 3's default strategy (albedo 1024^2: 0.053 s / 451 KB
# against 0.077 s / 488 KB).
PNG_LEVEL = 1
PNG_STRATEGY = cv2.IMWRITE_PNG_STRATEGY_RLE


def encode_png(array):
    """uint8 HxW or HxWx{3,4} (RGB order) -> PNG bytes."""
    if array.ndim == 3:
        code = cv2.COLOR_RGBA2BGRA if array.shape[2] == 4 else cv2.COLOR_RGB2BGR
        array = cv2.cvtColor(np.ascontiguousarray(array), code)
    ok, data = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL,
                                                    cv2.IMWRITE_PNG_STRATEGY, PNG_STRATEGY])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return data.tobytes()


def encode_pngs(images):
    """Encode several images at once: OpenCV releases the GIL while compressing, so threads run in
    parallel. {name: array} -> {name: PNG bytes}."""
    with ThreadPoolExecutor(max_workers=min(len(images), os.cpu_count() or 1, 8)) as pool:
        futures = {name: pool.submit(encode_png, array) for name, array in images.items()}
        return {name: future.result() for name, future in futures.items()}


def orm_image(ao, roughness, metallic):
    return np.dstack([ao, roughness, metallic])


class _Blob:
    """Accumulates the GLB binary chunk with 4-byte alignment."""

    def __init__(self, gltf):
        self.gltf = gltf
        self.data = bytearray()

    def view(self, payload, target=None):
        while len(self.data) % 4:
            self.data.append(0)
        offset = len(self.data)
        self.data.extend(payload)
        self.gltf.bufferViews.append(gl.BufferView(buffer=0, byteOffset=offset, byteLength=len(payload), target=target))
        return len(self.gltf.bufferViews) - 1

    def accessor(self, array, kind, component, target, with_bounds=False):
        array = np.ascontiguousarray(array)
        view = self.view(array.tobytes(), target)
        accessor = gl.Accessor(bufferView=view, componentType=component, count=len(array), type=kind)
        if with_bounds:
            accessor.min = array.min(axis=0).tolist()
            accessor.max = array.max(axis=0).tolist()
        self.gltf.accessors.append(accessor)
        return len(self.gltf.accessors) - 1


def write_glb(path, vertices, faces, normals, uvs=None, textures=None, name="Gen3D", uvs_kept=None):
    """textures: {"albedo": png, "normal": png, "orm": png} bytes, or None for an untextured mesh.

    Vertices, faces and UVs are written as given, in their order (only cast to float32 / uint32):
    a given mesh's arrays come back exactly. uvs_kept: a second UV set written as TEXCOORD_1 (a given
    mesh's own UVs when they had to be replaced for baking)."""
    gltf = gl.GLTF2(asset=gl.Asset(generator="Gen3D", version="2.0"))
    blob = _Blob(gltf)
    # glTF wants unit normals (the validator checks them at float32 precision)
    normals = np.asarray(normals, dtype=np.float64)
    normals = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-20)
    attributes = gl.Attributes(
        POSITION=blob.accessor(vertices.astype(np.float32), gl.VEC3, gl.FLOAT, gl.ARRAY_BUFFER, with_bounds=True),
        NORMAL=blob.accessor(normals.astype(np.float32), gl.VEC3, gl.FLOAT, gl.ARRAY_BUFFER))
    if uvs is not None:
        attributes.TEXCOORD_0 = blob.accessor(uvs.astype(np.float32), gl.VEC2, gl.FLOAT, gl.ARRAY_BUFFER)
        if uvs_kept is not None:
            attributes.TEXCOORD_1 = blob.accessor(uvs_kept.astype(np.float32), gl.VEC2, gl.FLOAT, gl.ARRAY_BUFFER)
        if textures:   # a normal map: its tangent space, as Blender and other MikkTSpace viewers build it
            attributes.TANGENT = blob.accessor(mikktspace_tangents(vertices, faces, normals, uvs), gl.VEC4,
                                               gl.FLOAT, gl.ARRAY_BUFFER)
    indices = blob.accessor(faces.astype(np.uint32).reshape(-1), gl.SCALAR, gl.UNSIGNED_INT, gl.ELEMENT_ARRAY_BUFFER)

    material = gl.Material(name=name + "_material", doubleSided=False)
    pbr = gl.PbrMetallicRoughness(metallicFactor=1.0, roughnessFactor=1.0)
    if textures:
        gltf.samplers.append(gl.Sampler(magFilter=gl.LINEAR, minFilter=gl.LINEAR_MIPMAP_LINEAR,
                                        wrapS=gl.CLAMP_TO_EDGE, wrapT=gl.CLAMP_TO_EDGE))
        index = {}
        for key in ("albedo", "normal", "orm"):
            view = blob.view(textures[key])
            gltf.images.append(gl.Image(bufferView=view, mimeType="image/png", name=key))
            gltf.textures.append(gl.Texture(sampler=0, source=len(gltf.images) - 1, name=key))
            index[key] = len(gltf.textures) - 1
        pbr.baseColorTexture = gl.TextureInfo(index=index["albedo"])
        pbr.metallicRoughnessTexture = gl.TextureInfo(index=index["orm"])
        material.normalTexture = gl.NormalMaterialTexture(index=index["normal"], scale=1.0)
        material.occlusionTexture = gl.OcclusionTextureInfo(index=index["orm"], strength=1.0)
    else:
        pbr.baseColorFactor = [0.8, 0.8, 0.8, 1.0]
        pbr.metallicFactor, pbr.roughnessFactor = 0.0, 0.6
    material.pbrMetallicRoughness = pbr
    gltf.materials.append(material)
    gltf.meshes.append(gl.Mesh(name=name, primitives=[gl.Primitive(attributes=attributes, indices=indices, material=0)]))
    gltf.nodes.append(gl.Node(name=name, mesh=0))
    gltf.scenes.append(gl.Scene(nodes=[0]))
    gltf.scene = 0
    gltf.buffers.append(gl.Buffer(byteLength=len(blob.data)))
    gltf.set_binary_blob(bytes(blob.data))
    gltf.save_binary(path)
