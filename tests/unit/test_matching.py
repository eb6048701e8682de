"""The compiled pattern matcher and its twin give exactly what trollsift gives.

A corpus of real satellite file-name patterns (EUMETCast HRIT/LRIT, MTG FCI, AAPP,
VIIRS/ATMS SDR, MODIS, Sentinel-1/2/3, Metop, GOES ABI, Himawari, radar, NWC SAF, ...)
with real-looking names, plus Hypothesis-generated names, is parsed by
``trollsift.parse`` and by ``PatternMatcher`` on both implementations: same keys,
same values, same types, and a non-match exactly where trollsift raises ValueError.
"""

from __future__ import annotations

import datetime as dt

import pytest
import trollsift
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trollmoves.matching as matching
from trollmoves.matching import PatternMatcher

CORPUS = [
    ("H-000-{hrit_format:4s}__-{platform_shortname:4s}________-{channel:_<9s}-{segment:_<9s}-"
     "{start_time:%Y%m%d%H%M}-{compression:1s}_", "H-000-MSG4__-MSG4________-IR_108___-000001___-202401011200-C_"),
    ("H-000-{hrit_format:4s}__-{platform_shortname:4s}________-{channel:_<9s}-{segment:_<9s}-"
     "{start_time:%Y%m%d%H%M}-__", "H-000-MSG4__-MSG4________-_________-PRO______-202401011200-__"),
    ("L-000-{platform:4s}__-{platform2:4s}________-{channel:_<9s}-{segment:_<9s}-{start_time:%Y%m%d%H%M}-{c:1s}_",
     "L-000-MSG3__-MSG3________-VIS006___-000002___-202401011215-C_"),
    ("{pflag}_{location_indicator},{data_designator},MTI{spacecraft_id:1d}+{data_source}-1C-RRAD-{subtype}-"
     "{coverage}-{subsetting}-{component1}-BODY-{component3}-{purpose}-{format}_{oflag}_{originator}_"
     "{processing_time:%Y%m%d%H%M%S}_{facility_or_tool}_{environment}_{start_time:%Y%m%d%H%M%S}_"
     "{end_time:%Y%m%d%H%M%S}_{processing_mode}_{special_compression}_{disposition_mode}_"
     "{repeat_cycle_in_day:>04d}_{count_in_repeat_cycle:>04d}.nc",
     "W_XX-EUMETSAT-Darmstadt,IMG+SAT,MTI1+FCI-1C-RRAD-FDHSI-FD--CHK-BODY--DIS-NC4E_C_EUMT_20240101120315_IDPFI_"
     "OPE_20240101120007_20240101120017_N__O_0073_0001.nc"),
    ("hrpt_{platform_name}_{start_time:%Y%m%d_%H%M}_{orbit_number:05d}.l1b", "hrpt_noaa19_20240101_1200_12345.l1b"),
    ("/data/aapp/{platform_name}_{start_time:%Y%m%d_%H%M}_{orbit_number:05d}/hirsl1c_{platform_name}_"
     "{start_time:%Y%m%d_%H%M}_{orbit_number:05d}.l1c",
     "/data/aapp/metop03_20240101_0915_26001/hirsl1c_metop03_20240101_0915_26001.l1c"),
    ("SVM{band:2d}_{platform_shortname}_d{start_time:%Y%m%d_t%H%M%S%f}_e{end_time:%H%M%S%f}_b{orbit:5d}_"
     "c{creation_time:%Y%m%d%H%M%S%f}_{source}.h5",
     "SVM05_npp_d20240101_t1200004_e1201246_b63123_c20240101121511123456_cspp_dev.h5"),
    ("SATMS_{platform_shortname}_d{start_time:%Y%m%d_t%H%M%S%f}_e{end_time:%H%M%S%f}_b{orbit:5d}_"
     "c{creation_time:%Y%m%d%H%M%S%f}_{source}.h5",
     "SATMS_j01_d20240101_t1200004_e1208001_b31234_c20240101122011123456_cspp_dev.h5"),
    ("M{platform_indicator:1s}D02{resolution:1s}KM.A{start_time:%Y%j.%H%M}.{collection:03d}."
     "{production_time:%Y%j%H%M%S}.hdf", "MOD021KM.A2024001.1200.061.2024001134512.hdf"),
    ("{platform_indicator:1s}1.{start_time:%y%j.%H%M}.1000m.hdf", "a1.24001.1200.1000m.hdf"),
    ("{mission_id:3s}_OL_1_{datatype_id:_<6s}_{start_time:%Y%m%dT%H%M%S}_{end_time:%Y%m%dT%H%M%S}_"
     "{creation_time:%Y%m%dT%H%M%S}_{duration:4d}_{cycle:3d}_{relative_orbit:3d}_{frame:4s}_{centre:3s}_"
     "{platform_mode:1s}_{timeliness:2s}_{collection:3s}.SEN3",
     "S3A_OL_1_EFR____20240101T120000_20240101T120300_20240101T140000_0179_085_123_1980_MAR_O_NR_002.SEN3"),
    ("{mission_id:3s}_SL_1_RBT____{start_time:%Y%m%dT%H%M%S}_{end_time:%Y%m%dT%H%M%S}_"
     "{creation_time:%Y%m%dT%H%M%S}_{duration:4d}_{cycle:3d}_{relative_orbit:3d}_{frame:4s}_{centre:3s}_"
     "{platform_mode:1s}_{timeliness:2s}_{collection:3s}.SEN3",
     "S3B_SL_1_RBT____20240101T101010_20240101T101310_20240101T121212_0179_074_322____LN2_O_NR_004.SEN3"),
    ("AVHR_xxx_1B_{platform_short_name}_{start_time:%Y%m%d%H%M%SZ}_{end_time:%Y%m%d%H%M%SZ}_{processing_mode}_"
     "{disposition_mode}_{creation_time:%Y%m%d%H%M%SZ}",
     "AVHR_xxx_1B_M01_20240101120003Z_20240101121503Z_N_O_20240101125000Z"),
    ("IASI_xxx_1C_{platform_short_name}_{start_time:%Y%m%d%H%M%SZ}_{end_time:%Y%m%d%H%M%SZ}_{processing_mode}_"
     "{disposition_mode}_{creation_time:%Y%m%d%H%M%SZ}",
     "IASI_xxx_1C_M03_20240101095953Z_20240101100257Z_N_O_20240101103314Z"),
    ("ASCA_SZR_1B_{platform_short_name}_{start_time:%Y%m%d%H%M%SZ}_{end_time:%Y%m%d%H%M%SZ}_{processing_mode}_"
     "{disposition_mode}_{creation_time:%Y%m%d%H%M%SZ}.nat",
     "ASCA_SZR_1B_M03_20240101095953Z_20240101100257Z_N_O_20240101103314Z.nat"),
    ("OR_ABI-L1b-{scene_abbr:s}-M{scan_mode:1d}C{channel:02d}_{platform_shortname:3s}_s{start_time:%Y%j%H%M%S%f}_"
     "e{end_time:%Y%j%H%M%S%f}_c{creation_time:%Y%j%H%M%S%f}.nc",
     "OR_ABI-L1b-RadF-M6C13_G16_s20240011200205_e20240011209513_c20240011209571.nc"),
    ("HS_{platform_shortname}_{start_time:%Y%m%d_%H%M}_B{band:2d}_{area}_R{res_id:d}{sub_res:d}_"
     "S{segment:2d}{total_segments:2d}.DAT", "HS_H09_20240101_1200_B13_FLDK_R20_S0110.DAT"),
    ("IMG_DK{area:2d}{channel:3s}_{start_time:%Y%m%d%H%M}_{segment:03d}", "IMG_DK01IR1_202401011200_001"),
    ("{source}_{product}_{start_time:%Y%m%d%H%M}.h5", "sekrn_pvol_202401011200.h5"),
    ("T_PAGZ{category:2s}_C_{centre:4s}_{start_time:%Y%m%d%H%M%S}.h5", "T_PAGZ41_C_ESWI_20240101120000.h5"),
    ("S_NWC_{product:s}_{platform_id}_{region_id}_{start_time:%Y%m%dT%H%M%S}Z.nc",
     "S_NWC_CMA_MSG4_MSG-N-VISIR_20240101T120000Z.nc"),
    ("S_NWC_{product}_{platform_id}_{orbit_number:05d}_{start_time:%Y%m%dT%H%M%S%f}Z_"
     "{end_time:%Y%m%dT%H%M%S%f}Z.nc", "S_NWC_CT_noaa19_12345_20240101T1200001Z_20240101T1215002Z.nc"),
    ("tf{start_time:%Y%j%H%M%S}.FY3D-X_MERSI_1000M_L1B.HDF", "tf2024001120000.FY3D-X_MERSI_1000M_L1B.HDF"),
    ("{mission_id:3s}_{beam:2s}_{prod_type:3s}{resolution:1s}_{processing_level:1d}{product_class:1s}"
     "{polarization:2s}_{start_time:%Y%m%dT%H%M%S}_{end_time:%Y%m%dT%H%M%S}_{orbit_number:6d}_"
     "{mission_data_take_id:6s}_{product_unique_id:4s}.SAFE",
     "S1A_IW_GRDH_1SDV_20240101T050000_20240101T050025_051234_062C2A_ABCD.SAFE"),
    ("{mission_id:3s}_MSIL1C_{observation_time:%Y%m%dT%H%M%S}_N{baseline:4d}_R{relative_orbit:3d}_"
     "T{dtile_number:2d}{tile_number:3s}_{processing_time:%Y%m%dT%H%M%S}.SAFE",
     "S2A_MSIL1C_20240101T103421_N0510_R108_T32VNM_20240101T123456.SAFE"),
    ("GW1AM2_{start_time:%Y%m%d%H%M}_{area:03d}{direction:1s}_L1SGBTBR_{software_version:7s}.h5",
     "GW1AM2_202401011200_032D_L1SGBTBR_2220220.h5"),
    ("3B-HHR.MS.MRG.3IMERG.{date:%Y%m%d}-S{start_time:%H%M%S}-E{end_time:%H%M%S}.{sequence:04d}.V{version:2s}.HDF5",
     "3B-HHR.MS.MRG.3IMERG.20240101-S120000-E122959.0720.V07.HDF5"),
    ("V{platform_shortname:2s}02{file_type:3s}.A{start_time:%Y%j.%H%M}.{collection_number:3d}."
     "{creation_time:%Y%j%H%M%S}{creator}.nc", "VNP02MOD.A2024001.1200.002.2024001134512.nc"),
    ("ice_conc_{hemisphere:2s}_{grid}_{sensor}_{start_time:%Y%m%d%H%M}.nc",
     "ice_conc_nh_polstere-100_multi_202401011200.nc"),
    ("MSG{satid:1d}-SEVI-MSG15-{id1:4d}-NA-{end_time:%Y%m%d%H%M%S.%f}-{id2}",
     "MSG4-SEVI-MSG15-0100-NA-20240101121243.123456-NA"),
    ("{x:02x}_{o:o}_{b:b}.bin", "ff_777_1011.bin"),
    ("{a:>5d}_{b:<5d}_{c:^5s}_{d:*=5d}.txt", "   12_34   _ ab  _-**12.txt"),
    ("{lat:5.2f}_{lon:.1f}.txt", "12.34_-5.5.txt"),
    ("{t:%y%j}_{x:>04d}.x", "23366_0012.x"),
    ("{t:%m%d}.x", "0229.x"),
    ("{t:%H%M%S}.x", "235960.x"),
    ("{t:%b%Y}_{n:03d}.x", "Jan2024_007.x"),
    ("{platform}/{t:%Y/%m/%d}/{name}.nc", "noaa19/2024/13/01/x.nc"),
]


@pytest.fixture(params=["py", "c"])
def implementation(request, monkeypatch):
    """Run each test with the pure-Python twin and with the compiled module."""
    if request.param == "py":
        from trollmoves import _native as module
    else:
        module = pytest.importorskip("trollmoves._speedups")
    monkeypatch.setattr(matching, "parse_name", module.parse_name)
    return request.param


def trollsift_or_none(pattern, name):
    try:
        return trollsift.parse(pattern, name)
    except ValueError:
        return None


def assert_same(pattern, name):
    expected = trollsift_or_none(pattern, name)
    got = PatternMatcher(pattern).parse(name)
    assert got == expected, (pattern, name)
    if expected is not None:
        assert list(got) == list(expected)
        assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in expected.items()}


def test_corpus_is_large_enough():
    assert len({pattern for pattern, _ in CORPUS}) >= 30


@pytest.mark.parametrize("pattern,name", CORPUS, ids=[n[:40] for _, n in CORPUS])
def test_corpus_matches_trollsift(implementation, pattern, name):
    assert_same(pattern, name)
    for mutated in (name[:-1], name + "x", "x" + name, name.replace("2024", "2O24", 1), name.upper(), ""):
        assert_same(pattern, mutated)


@pytest.mark.parametrize("pattern,name", CORPUS[:12], ids=[n[:40] for _, n in CORPUS[:12]])
def test_globify_is_trollsifts(pattern, name):
    assert PatternMatcher(pattern).glob == trollsift.globify(pattern)


def test_known_corner_cases(implementation):
    assert PatternMatcher("{t:%m%d}.x").parse("0229.x") is None  # 1900 is not a leap year, as strptime says
    assert PatternMatcher("{t:%y%j}.x").parse("23366.x") == {"t": dt.datetime(2024, 1, 1)}
    assert PatternMatcher("{a:3d}.x").parse("abc.x") is None
    assert PatternMatcher("{a:4s}.dat").parse("abcd.dat\n") == trollsift.parse("{a:4s}.dat", "abcd.dat\n")
    assert PatternMatcher("a{foo:*=d}b").parse("ab") == {"foo": 0}


SAFE_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(index=st.integers(0, len(CORPUS) - 1), edit=st.integers(0, 200), insert=SAFE_TEXT)
def test_mutated_names_agree(index, edit, insert):
    pattern, name = CORPUS[index]
    position = edit % (len(name) + 1)
    for module_name in ("_native", "_speedups"):
        module = pytest.importorskip(f"trollmoves.{module_name}")
        original = matching.parse_name
        matching.parse_name = module.parse_name
        try:
            assert_same(pattern, name[:position] + insert + name[position + 1:])
            assert_same(pattern, name[:position] + insert + name[position:])
        finally:
            matching.parse_name = original


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(when=st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2068, 12, 31)),
       number=st.integers(0, 99999), word=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1,
                                                 max_size=10))
def test_composed_names_round_trip(when, number, word):
    when = when.replace(microsecond=0)
    for pattern in ("hrpt_{platform_name}_{start_time:%Y%m%d_%H%M%S}_{orbit_number:05d}.l1b",
                    "{p}_{start_time:%y%j%H%M%S}_{orbit_number:>6d}.x",
                    "{start_time:%Y-%m-%dT%H:%M:%S}_{platform_name:_<10s}_{orbit_number:x}.dat"):
        name = trollsift.compose(pattern, {"platform_name": word, "p": word, "start_time": when,
                                           "orbit_number": number})
        for module_name in ("_native", "_speedups"):
            module = pytest.importorskip(f"trollmoves.{module_name}")
            original = matching.parse_name
            matching.parse_name = module.parse_name
            try:
                assert_same(pattern, name)
            finally:
                matching.parse_name = original


COMPOSE_TEMPLATES = [
    "file:///data/{platform_name}/{start_time:%Y/%m/%d}/",
    "ftp://host/{sensor!u}/{platform_name!l}_{orbit_number:05d}_{start_time:%Y%m%d_%H%M}.l1b",
    "sftp://u@h:2222/{a!R}/{b!h}/{c!H}/{d!c}/{e!t}/{f!r}/{g!s}/",
    "s3://bucket/{x:>8s}|{y:*^9}|{z:+.3f}|{n:x}",
    "{{literal}}/{platform_name}",
    "/{a[0]}/{b.real}/",
    "/{}/",
    "/{a:{w}d}/",
]
COMPOSE_DATA = {"platform_name": "NOAA-19", "start_time": dt.datetime(2024, 1, 2, 3, 4, 5), "sensor": "avhrr",
                "orbit_number": 123, "a": "a-b_c d:e", "b": "Bb-C", "c": "c c", "d": "dD", "e": "e e",
                "f": "f", "g": 7, "x": "xy", "y": "y", "z": 1.5, "n": 255, "w": 5}


@pytest.mark.parametrize("template", COMPOSE_TEMPLATES)
def test_composer_matches_trollsift(template):
    def outcome(function):
        try:
            return ("ok", function())
        except Exception as exc:  # noqa: BLE001 - the same exception type is the contract
            return ("error", type(exc))
    expected = outcome(lambda: trollsift.compose(template, COMPOSE_DATA))
    assert outcome(lambda: matching.Composer(template).compose(COMPOSE_DATA)) == expected
    partial = {k: v for k, v in COMPOSE_DATA.items() if k not in ("orbit_number", "a")}
    assert outcome(lambda: matching.Composer(template).compose(partial)) == \
        outcome(lambda: trollsift.compose(template, partial))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=st.one_of(st.integers(), st.text(max_size=10), st.floats(allow_nan=False),
                       st.datetimes(min_value=dt.datetime(1900, 1, 1))),
       spec=st.sampled_from(["", "s", "d", "05d", ">8", "<8", "^8", "*^9", ".2f", "%Y%m%d", "x", "!u", "!R"]))
def test_composer_matches_trollsift_on_generated_values(value, spec):
    template = "/x/{v!u}/" if spec == "!u" else "/x/{v!R}/" if spec == "!R" else "/x/{v:" + spec + "}/"

    def outcome(function):
        try:
            return ("ok", function())
        except Exception as exc:  # noqa: BLE001
            return ("error", type(exc))
    assert outcome(lambda: matching.Composer(template).compose({"v": value})) == \
        outcome(lambda: trollsift.compose(template, {"v": value}))
